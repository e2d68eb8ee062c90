"""Safe parsing of the constructor-call strings stored in official DUSt3R/MASt3R ``.pth`` checkpoints.

``ckpt['args'].model`` is a Python expression such as::

    AsymmetricCroCo3DStereo(pos_embed='RoPE100', img_size=(512, 512), head_type='dpt',
                            depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), ...)

The official loader runs ``eval`` on it. Here it is parsed with :mod:`ast` and only literals are accepted:
strings, numbers, booleans, None, tuples/lists/dicts of those, and the bare names ``inf`` / ``nan`` (with an
optional sign) or ``float('inf')``. Anything else (attribute access, other calls, other names) is rejected.
"""

from __future__ import annotations

import ast
import math
from typing import Any

__all__ = ["ModelArgsError", "inference_kwargs", "parse_model_call"]

_NAMED_FLOATS = {"inf": math.inf, "nan": math.nan}


class ModelArgsError(ValueError):
    """The constructor string is not a plain keyword call with literal arguments."""


def _literal(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMED_FLOATS:
        return _NAMED_FLOATS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, text) for e in node.elts)
    if isinstance(node, ast.List):
        return [_literal(e, text) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k, text): _literal(v, text) for k, v in zip(node.keys, node.values)}
    if (  # float('inf') / float('-inf') / float('nan')
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
        and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str) and node.args[0].value.strip().lower().lstrip("+-") in _NAMED_FLOATS
    ):
        return float(node.args[0].value)
    snippet = ast.get_source_segment(text, node) or type(node).__name__
    raise ModelArgsError(f"only literal arguments are allowed in a model string, found {snippet!r}")


def parse_model_call(text: str) -> tuple[str, dict[str, Any]]:
    """``"Cls(a=1, b=('exp', -inf, inf))"`` -> ``("Cls", {"a": 1, "b": ("exp", -inf, inf)})`` without eval.

    Raises :class:`ModelArgsError` for anything but ``Name(keyword=literal, ...)``.
    """
    if not isinstance(text, str):
        raise ModelArgsError(f"model string must be a str, received {type(text).__name__}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ModelArgsError(f"model string is not a Python expression: {text!r} ({err.msg})") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ModelArgsError(f"model string must be a call like 'ClassName(key=value, ...)', received {text!r}")
    if call.args:
        raise ModelArgsError(f"model string must use keyword arguments only, received {text!r}")
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise ModelArgsError(f"'**' expansion is not allowed in a model string: {text!r}")
        kwargs[kw.arg] = _literal(kw.value, text.strip())
    return call.func.id, kwargs


def inference_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Apply what the official ``load_model`` does to a training-time ``--model`` call before building:
    ``ManyAR_PatchEmbed`` -> ``PatchEmbedDust3R`` and ``landscape_only=False``."""
    out = dict(kwargs)
    out["patch_embed_cls"] = "PatchEmbedDust3R"  # ManyAR_PatchEmbed is training-only (same parameters)
    out["landscape_only"] = False
    return out
