"""Loading a config: YAML read safely (size limit, duplicate keys refused), --set overrides applied,
validated once into the frozen schema (schema.py), with every problem said in one line that names its key."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from stnexp.config.messages import cut, did_you_mean, first_line, shown
from stnexp.config.schema import ARCHS, Config, VariantConfig
from stnexp.errors import UserError
from stnexp.models import backbones

MAX_BYTES = 1 << 20  # a config file larger than this is refused before it is parsed


class _Loader(yaml.SafeLoader):
    """YAML as people write numbers and mappings: `1e9` and `1.0e9` are numbers (YAML 1.1 reads them as
    strings), and a key given twice in one mapping is an error, not a silent overwrite (a key that
    overrides one merged in with `<<: *anchor` is not given twice)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: merged below, its keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    twice = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if twice:
                    raise _DuplicateKey(key, key_node.start_mark)
        return super().construct_mapping(node, deep)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark):
        super().__init__(f"line {mark.line + 1}: key {shown(key)} given twice in one mapping")


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader)


def parse_set(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a', 'b', 'c'], value parsed as YAML)."""
    if "=" not in item:
        raise UserError(f"--set {cut(item)}: expected key.path=value")
    key, _, text = item.partition("=")
    path = key.strip().split(".")
    if not all(path):
        raise UserError(f"--set {cut(item)}: empty key in {shown(key)}")
    try:
        value = _parse(text) if text.strip() else None
    except _DuplicateKey as e:
        raise UserError(f"--set {cut(item)}: {e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"--set {cut(item)}: value is not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"--set {cut(item)}: value is nested too deeply") from None
    return path, value


STN_KEYS = ("transform", "at", "out_size", "loc_lr_scale", "loc", "pool")


def apply_sets(raw: dict, sets: list[str]) -> dict:
    for item in sets:
        path, value = parse_set(item)
        model = (raw.get("models") or {}).get(path[1]) if len(path) == 3 and path[0] == "models" else None
        if isinstance(model, dict) and isinstance(model.get("stn"), dict) and path[2] in STN_KEYS:
            # `models.st-cnn.loc_lr_scale=...` as in version 0.1's flat form: the key of its `stn` block
            path = path[:2] + ["stn", path[2]]
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {cut(item)}: {cut('.'.join(path[: i + 1]))} is not a mapping")
            node = child
        node[path[-1]] = value
    return raw


def variants_from_sets(sets: list[str]) -> dict[str, VariantConfig]:
    """Ad-hoc variants for `eval --set 'data.variants.NAME={...}'`, validated as a config's are."""
    raw = apply_sets({}, list(sets))
    extra = set(raw) - {"data"} or set(raw.get("data") or {}) - {"variants"}
    if extra:
        raise UserError(
            f"--set {sorted(extra)[0]}: eval takes only data.variants.NAME=... (ad-hoc variants to test on)"
        )
    try:
        return Config.model_validate(raw).data.variants if raw else {}
    except ValidationError as e:
        raise UserError("\n".join(describe(err) for err in e.errors())) from None


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    if path.stat().st_size > MAX_BYTES:
        raise UserError(f"{path}: {path.stat().st_size:,} bytes; a config may hold at most {MAX_BYTES:,}")
    try:
        raw = _parse(path.read_text())
    except _DuplicateKey as e:
        raise UserError(f"{path}: {e}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a config") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise UserError(f"{path}: YAML syntax error at {where}: {e.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not readable as YAML: {first_line(e)}") from None
    if raw is None:
        raise UserError(f"{path}: the config is empty")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a mapping of keys, got {type(raw).__name__}")
    return raw


def load(path: Path, sets: list[str] = ()) -> Config:
    """Read, override (`--set`) and validate a config; UserError lists every problem, one per line."""
    raw = apply_sets(read_yaml(path), list(sets))
    raw.setdefault("name", Path(path).stem)
    return validate(raw)


def validate(raw: dict) -> Config:
    """Validate a raw config (a file's, or a checkpoint's): every key and value, then whether every model
    can take every variant's images. UserError lists every problem, one per line."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise UserError("\n".join(describe(err) for err in e.errors())) from None
    except RecursionError:
        raise UserError("(config): nested too deeply to be a config") from None
    problems = size_problems(cfg)
    if problems:
        raise UserError("\n".join(problems))
    return cfg


def size_problems(cfg: Config) -> list[str]:
    """Each (variant, model) pair whose images are too small for the model's layers, and each transformer
    whose out_size is too small for the layers behind it, with the smallest size that works."""
    out = []
    for mname, mcfg in cfg.models.items():
        need = backbones.smallest_out_size(mcfg)
        if need is not None:
            out.append(
                f"models.{mname}: out_size {mcfg.stn.out_size} is too small for the layers behind the transformer (at "
                f"least {need})"
            )
            continue
        for vname in cfg.data.variants:
            canvas = cfg.variant(vname).canvas
            if not backbones.fits(mcfg, canvas):
                out.append(
                    f"data.variants.{vname}: canvas {canvas} is too small for model {mname} (it needs at least "
                    f"{backbones.smallest_input(mcfg)})"
                )
    return out


def describe(err: dict) -> str:
    loc = _clean_loc(err["loc"])
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        fields = _fields_at(Config, err["loc"][:-1])
        return f"{'.'.join(loc)}: unknown key{did_you_mean(loc[-1], fields)}"
    if kind == "union_tag_invalid":
        return f"{'.'.join(loc + ['arch'])}: unknown arch {err['ctx']['tag']!r} (choose from {', '.join(ARCHS)})"
    if kind == "union_tag_not_found":
        return f"{'.'.join(loc + ['arch'])}: missing (choose from {', '.join(ARCHS)})"
    if kind == "literal_error":
        return f"{'.'.join(loc)}: expected {err['ctx']['expected']}, got {shown(err['input'])}"
    msg = msg.removeprefix("Value error, ")
    for key in ("preset", "patch_size", "at"):  # raised by validators that see more than their key
        if msg.startswith(f"{key}: "):
            loc, msg = loc + [key], msg.removeprefix(f"{key}: ")
    got = (
        ""
        if kind.startswith("value_error") or "input" not in err or isinstance(err["input"], dict)
        else f", got {shown(err['input'])}"
    )
    return f"{'.'.join(loc) or '(config)'}: {msg[0].lower() + msg[1:]}{got}"


def _clean_loc(loc: tuple) -> list[str]:
    # Pydantic puts the discriminator's value in the path (models.x.stn-cnn.transform); users never wrote it.
    out = []
    for i, part in enumerate(loc):
        if loc[0] == "models" and i == 2 and part in ARCHS:
            continue
        out.append(str(part))
    return out


def _fields_at(model: type, loc: tuple) -> list[str]:
    """The keys allowed at a location of the config, for 'did you mean'."""
    node: Any = model
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part in node.model_fields:
                node = node.model_fields[part].annotation
            else:
                return []
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif isinstance(node, list):  # a tagged union of models: pydantic puts the tag in the path
            node = next((m for m in node if part in typing.get_args(m.model_fields["arch"].annotation)), None)
    node = _unwrap(node)
    if isinstance(node, list):
        return sorted({f for m in node for f in m.model_fields})
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _unwrap(node: Any) -> Any:
    while True:
        origin = typing.get_origin(node)
        if origin is Annotated:
            node = typing.get_args(node)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(node) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(args) == 1:
                node = args[0]
            elif models and len(models) == len(args):
                return models
            else:
                return node
        else:
            return node
