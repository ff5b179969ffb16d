"""Import every `*_model.py` file here so that its components register into BasicSR's registry."""
import importlib
from os import path as osp

from basicsr.utils import scandir

_folder = osp.dirname(osp.abspath(__file__))
_module_names = sorted(osp.splitext(osp.basename(p))[0] for p in scandir(_folder) if p.endswith('_model.py'))
_modules = [importlib.import_module(f'cqshift_basicsr.models.{name}') for name in _module_names]

# Re-export each module's public names, e.g. `from cqshift_basicsr.archs import CQShiftNet`.
__all__ = []
for _module in _modules:
    for _name in getattr(_module, '__all__', ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
