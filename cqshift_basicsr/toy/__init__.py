"""The toy-face domain: a deterministic generator of synthetic frontal faces with exact 19-class parsing maps.

The project cannot download FFHQ / CelebA-HQ or any pretrained network, so these faces are the embedded default
data of the demo and the test data of the whole suite; the shipped checkpoints were trained on them, so the same
arguments must always give the same bytes (tests/test_toy_renderer.py pins them).

Labels follow CelebAMask-HQ's order (the one facexlib's ParseNet / PSFRGAN use). ``l_*`` / ``r_*`` mean the part
on the image's left / right side (viewer's perspective); a horizontal flip must swap 4<->5, 6<->7 and 8<->9.

Modules: ``identity`` (what a face looks like), ``canvas`` (the drawing surface), ``head``, ``clothes``, ``hair``,
``features``, ``accessories`` and ``shading`` (the parts, painted in that order by ``render``), ``labels`` (parsing
maps) and ``dataset`` (the splits on disk: ``make_toy_faces``, ``cqshift-make-toy-faces``).
"""
from .dataset import (EXTRA_HQ_FIRST_ID, EXTRA_HQ_META, IDENTITIES_META, SPLITS, main, make_contact_sheet,
                      make_toy_faces)
from .identity import HAIR_STYLES, sample_identity, sample_view
from .labels import LABEL, LABEL_NAMES, NUM_LABELS, PARSING_PALETTE, colorize_parsing
from .render import render_face

__all__ = [
    'EXTRA_HQ_FIRST_ID', 'EXTRA_HQ_META', 'IDENTITIES_META', 'SPLITS', 'HAIR_STYLES',
    'LABEL', 'LABEL_NAMES', 'NUM_LABELS',
    'PARSING_PALETTE', 'colorize_parsing', 'main', 'make_contact_sheet', 'make_toy_faces', 'render_face',
    'sample_identity', 'sample_view'
]
