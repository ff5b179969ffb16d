"""One check for "this value must be one of these choices", shared by the archs, losses, metrics and tools.

:func:`check_choice` raises the same message everywhere (the style of :func:`cqshift_basicsr.option_check.one_of`,
which checks option files before a run): ``shift_mode must be one of 'per_image', 'global'; got 'local'``, with a
``did you mean`` hint for a near miss. It imports nothing from the package, so any module can use it.
"""
import difflib

__all__ = ['check_choice']


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` naming the option.

    Args:
        name (str): how the message names the option, e.g. ``'shift_mode'`` or ``'calculate_lpips: option `net`'``.
        value: the value given.
        choices (Iterable): the valid values (a tuple, or a dict / set: its keys); shown in iteration order.

    Returns:
        The value, unchanged.
    """
    try:
        if value in choices:
            return value
    except TypeError:  # an unhashable value (a list) tested against a dict or set: not a choice
        pass
    choices = list(choices)
    message = f'{name} must be one of {", ".join(map(repr, choices))}; got {value!r}'
    if isinstance(value, str):
        match = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
        if match:
            message += f'; did you mean `{match[0]}`?'
    raise ValueError(message)
