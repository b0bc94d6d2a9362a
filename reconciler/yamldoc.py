"""YAML text -> plain data that remembers where each value stands, read within bounds.

Every YAML file portctl reads goes through here: the manifest, and the agent's config file (named
by `what` in messages). A manifest is a few kilobytes, so anything far beyond that is refused with
a located problem instead of being read: text over MAX_BYTES, nesting deeper than MAX_DEPTH, and
more than MAX_NODES values once aliases are expanded (a few hundred bytes of aliases of aliases,
the "billion laughs", name billions of values). An alias inside the value it names is refused where it stands.

Scalars are read as YAML 1.2's core schema: no sexagesimal `22:22`, no `yes`/`no` booleans, and an
integer is ASCII digits even under an explicit `!!int` tag (Python's int() also reads '٨٠' and '²'
would crash it). Every value that cannot be read becomes a Problem, never an exception.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from .errors import Problem

MAX_BYTES = 256 * 1024  # a thousand mappings take about 80 KiB
MAX_DEPTH = 32  # a manifest nests 4 deep
MAX_NODES = 50_000  # values and keys after aliases expand; a thousand mappings of eight keys take 17 000

Path = tuple[str | int, ...]

_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_MAX_INT_DIGITS = 20  # int() of thousands of digits is slow, then refused; nothing here needs more than 6
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_PLAIN_COLLECTIONS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


class _TooBig(Exception):
    """The text goes past one of the bounds; `mark` is where."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def json_path(at: Path) -> str:
    out = "$"
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def oversize(data: bytes | str, path: str, what: str = "manifest") -> Problem | None:
    """A problem naming the line where `data` passes MAX_BYTES, if it does."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) <= MAX_BYTES:
        return None
    line = raw.count(b"\n", 0, MAX_BYTES) + 1
    return Problem(path, line, 1, "", f"the {what} goes past {MAX_BYTES} bytes here; portctl reads no more")


def read(path: str, what: str = "manifest") -> str | Problem:
    """The text of the file at `path`, or the problem that keeps it from being read.

    A huge file is refused without reading it all.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        return oversize(raw, path, what) or raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem(path, 0, 0, "", f"cannot read {what}: {exc}")


class Document:
    """YAML parsed into plain data, remembering where each value and key stands."""

    def __init__(self, text: str, path: str, *, what: str = "manifest", empty_ok: bool = False) -> None:
        """`what` names the document in messages; with `empty_ok`, an empty one is data None, not a problem."""
        import yaml

        self.path = path
        self.what = what
        self.problems: list[Problem] = []
        self.values: dict[Path, tuple[int, int]] = {}
        self.keys: dict[Path, tuple[int, int]] = {}
        self.data: Any = None
        self._nodes = 0
        too_big = oversize(text, path, what)
        if too_big:
            self.problems.append(too_big)
            return
        try:
            loader = _loader_class()(text)
            loader.what = what
            try:
                node = loader.get_single_node()
                if node is None:
                    if not empty_ok:
                        self.problems.append(Problem(path, 1, 1, "", f"the {what} is empty"))
                    return
                self.data = self._convert(node, (), loader)
            finally:
                loader.dispose()
        except _TooBig as exc:
            self.problems = [Problem(path, exc.mark.line + 1, exc.mark.column + 1, "", exc.message)]
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            what = " ".join(s for s in (exc.context, exc.problem) if s)
            self.problems.append(Problem(path, line, col, "", f"invalid YAML: {what}"))
        except yaml.YAMLError as exc:
            self.problems.append(Problem(path, 0, 0, "", f"invalid YAML: {exc}"))

    def _convert(self, node: Any, at: Path, loader: Any) -> Any:
        import yaml

        self._count(node, at)
        self.values[at] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_COLLECTIONS:
            message = f"{_short(node.tag)} is not a {self.what} value: write a plain list or mapping"
            self.problems.append(self.problem(at, message))
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                self._count(key_node, at)
                where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problems.append(Problem(self.path, *where, json_path(at), "a key must be text"))
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    message = "merge keys (<<) are YAML 1.1, not read here: write the keys out"
                    self.problems.append(Problem(self.path, *where, json_path(at), message))
                    continue
                key = self._scalar(key_node, at, loader)
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    self.problems.append(Problem(self.path, *where, json_path(at), f"duplicate key {key!r}"))
                    continue
                self.keys[(*at, key)] = where
                out[key] = self._convert(value_node, (*at, key), loader)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(n, (*at, i), loader) for i, n in enumerate(node.value)]
        return self._scalar(node, at, loader)

    def _count(self, node: Any, at: Path) -> None:
        """Stop once aliases have expanded the document past the bounds."""
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooBig(node.start_mark, f"the {self.what} expands to more than {MAX_NODES} values (aliases repeat)")
        if len(at) > MAX_DEPTH:
            message = f"the {self.what} nests deeper than {MAX_DEPTH} levels (through aliases)"
            raise _TooBig(node.start_mark, message)

    def _scalar(self, node: Any, at: Path, loader: Any) -> Any:
        import yaml

        try:
            return loader.construct_object(node)
        # PyYAML's constructors raise whatever their parsing hits: ValueError from float('x'),
        # AttributeError from a !!timestamp that does not match, binascii.Error (a ValueError).
        except (yaml.YAMLError, ValueError, LookupError, TypeError, AttributeError, OverflowError) as exc:
            detail = f" ({exc.problem})" if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else ""
            self.problems.append(self.problem(at, f"{node.value!r} is not a valid {_short(node.tag)}{detail}"))
            return None

    def where(self, at: Path, *, key: bool = False) -> tuple[int, int]:
        table = self.keys if key else self.values
        while at not in table and at:
            at = at[:-1]
        return table.get(at, (0, 0))

    def problem(self, at: Path, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(at, key=key)
        return Problem(self.path, line, col, json_path(at), message)

    def repeated_name(self, at: Path, name: object, seen: dict[str, int]) -> list[Problem]:
        """The item at `at` (its section and index) names itself `name`: a problem if an earlier item of
        the section took that name (kept in `seen`, which learns this one otherwise)."""
        if not isinstance(name, str):
            return []
        section, index = at[0], at[1]
        if name in seen:
            return [self.problem((*at, "name"), f"duplicate name {name!r} (also {section}[{seen[name]}])")]
        seen[name] = int(index)
        return []


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _construct_int(loader: Any, node: Any) -> int:
    """YAML 1.2 core integers only, also under an explicit !!int tag."""
    import yaml

    text = loader.construct_scalar(node)
    if not (_INT.fullmatch(text) and len(text) <= _MAX_INT_DIGITS):
        problem = "YAML 1.2 integers are ASCII digits, 0o octal or 0x hex"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _construct_bool(loader: Any, node: Any) -> bool:
    """YAML 1.2 core booleans only (not yes/no/on/off), also under an explicit !!bool tag."""
    import yaml

    text = loader.construct_scalar(node)
    if text not in _BOOLS:
        raise yaml.constructor.ConstructorError(None, None, "YAML 1.2 booleans are true or false", node.start_mark)
    return _BOOLS[text]


@cache
def _loader_class() -> type:
    """A safe loader that reads YAML 1.2 scalars and refuses recursive aliases and deep nesting."""
    import yaml

    class Loader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._depth = 0
            self.what = "manifest"  # how messages name the document

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.AliasEvent):
                named = self.anchors.get(event.anchor)
                # The composer sets a collection's end_mark when it closes: an alias to an open one
                # is inside what it names.
                if named is not None and named.end_mark is None:
                    raise _TooBig(event.start_mark, f"the alias *{event.anchor} is inside the value it names")
                return super().compose_node(parent, index)
            if not isinstance(event, yaml.CollectionStartEvent):
                return super().compose_node(parent, index)
            if self._depth >= MAX_DEPTH:
                raise _TooBig(event.start_mark, f"the {self.what} nests deeper than {MAX_DEPTH} levels")
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    bool_tag, int_tag = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int"
    Loader.yaml_implicit_resolvers = {
        first: [(t, rx) for t, rx in resolvers if t not in (bool_tag, int_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    Loader.add_implicit_resolver(
        int_tag, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
    )
    Loader.add_constructor(int_tag, _construct_int)
    Loader.add_constructor(bool_tag, _construct_bool)
    return Loader
