"""Reading a spec: size, encoding, nesting and alias bounds, line numbers for every field,
validation into the models, and the references between its parts (images, roles,
secrets, paths), each error naming the file, the line and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import SpecError
from ..paths import ImageFileError, check_image_files, inside_project, secret_file
from .models import ConfigLayer, EnvironmentSpec, Spec
from .values import MAX_DEPTH, MAX_EXPANDED_NODES, MAX_SPEC_BYTES, SPEC_FILENAME

class LoadedSpec:
    """A validated spec plus where it came from, so later errors can still name lines."""

    def __init__(self, spec: Spec, path: Path, lines: dict[tuple, int], text: str = ""):
        self.spec = spec
        self.text = text
        self.path = path
        self.project_dir = path.parent
        self._lines = lines

    def where(self, *loc: Any) -> str:
        return f"{self.path.name}:{_line_for(self._lines, loc)}"

    def error(self, loc: tuple, message: str) -> SpecError:
        """`phoenix.yaml:LINE: field.path: message` for a place in this spec."""
        return SpecError(f"{self.where(*loc)}: {_dotted(loc)}: {message}")

    def environment(self, env: str) -> EnvironmentSpec:
        if env not in self.spec.environments:
            known = ", ".join(sorted(self.spec.environments))
            raise SpecError(f"{self.path.name}: unknown environment {env!r} (environments: {known})")
        return self.spec.environments[env]

    def check_role(self, role: str) -> None:
        if role not in self.spec.roles:
            known = ", ".join(sorted(self.spec.roles))
            raise SpecError(f"{self.path.name}: unknown role {role!r} (roles: {known})")


# --- loading with line numbers -------------------------------------------------------------


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], filename: str, seen_nodes: set[int] | None = None) -> None:
    """Map each field's path to its line. A node reached again through an alias is not walked
    again (its fields keep the lines of where it was written), so aliases cost nothing here."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    lines[path] = node.start_mark.line + 1
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise SpecError(
                    f"{filename}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}: duplicate key"
                )
            seen.add(key)
            _index_lines(value_node, path + (key,), lines, filename, seen_nodes)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, path + (index,), lines, filename, seen_nodes)


def _check_bounds(root: yaml.Node, name: str) -> None:
    """Refuse a document nested too deeply, with a recursive alias, or whose aliases expand it
    beyond MAX_EXPANDED_NODES (a "billion laughs"). Each node's expanded size is counted once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"{name}:{node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in on_path:
            raise SpecError(f"{name}:{node.start_mark.line + 1}: an alias refers to the node that contains it")
        on_path.add(id(node))
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else []
        )
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_EXPANDED_NODES:
                raise SpecError(
                    f"{name}:{node.start_mark.line + 1}: the document expands to more than {MAX_EXPANDED_NODES} values "
                    "(aliases repeating aliases?)"
                )
        on_path.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def _parse_yaml(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    """Compose the document once, check its bounds, then build it from the same nodes.

    libyaml's loader first when PyYAML has it: the same nodes and marks, about 20 times
    faster (the pure-Python parse of the example was a tenth of `phoenix status`). On bad
    YAML the pure-Python loader parses again, for its clearer message."""
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SpecError(f"{name}:{line}: contains a NUL byte (is it a text file?)")
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return _compose_and_build(fast, text, name)
        except yaml.YAMLError:
            pass  # told below, in the pure-Python loader's words
    return _compose_and_build(yaml.SafeLoader, text, name)


def _compose_and_build(loader_class: type, text: str, name: str) -> tuple[yaml.Node | None, Any]:
    loader = loader_class(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise SpecError(f"{name}: nested deeper than {MAX_DEPTH} levels") from None
        if root is None:
            return None, None
        _check_bounds(root, name)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def _line_for(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _clean_loc(loc: tuple) -> tuple:
    # pydantic inserts validator names such as 'function-before[...]' and 'int' into locations
    return tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part in ("int", "str"))))


def load_spec(path: str | Path | None = None) -> LoadedSpec:
    """Find, parse and validate the spec. Raises SpecError with file:line: field: reason."""
    spec_path = Path(path) if path else Path.cwd() / SPEC_FILENAME
    name = spec_path.name if path is None else str(path)
    try:
        with spec_path.open("rb") as file:
            raw = file.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{name}: no such file (create one with `phoenix init DIR`, or pass -f PATH)") from None
    except OSError as exc:
        raise SpecError(f"{name}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{name}: larger than {MAX_SPEC_BYTES // 1024} KiB; a spec that size is not a spec")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{name}:{line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    return parse_spec(text, spec_path, name)


def parse_spec(text: str, spec_path: Path, name: str) -> LoadedSpec:
    """Validate spec text (a file's, or one kept with a release) as if it were at spec_path."""
    try:
        root, data = _parse_yaml(text, name)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{name}:{line}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{name}:1: expected a mapping with images, roles and environments")
    lines: dict[tuple, int] = {}
    _index_lines(root, (), lines, name)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = _clean_loc(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        raise SpecError(f"{name}:{_line_for(lines, loc)}: {_dotted(loc)}: {message}") from None
    loaded = LoadedSpec(spec, spec_path.resolve(), lines, text)
    _check_references(loaded, name)
    return loaded


def _check_references(loaded: LoadedSpec, name: str) -> None:
    spec = loaded.spec

    def fail(loc: tuple, message: str) -> None:
        raise SpecError(f"{name}:{_line_for(loaded._lines, loc)}: {_dotted(loc)}: {message}")

    for role_name, role in spec.roles.items():
        if role.image not in spec.images:
            fail(("roles", role_name, "image"), f"unknown image {role.image!r} (images: {', '.join(sorted(spec.images))})")
    for role_name, role in spec.roles.items():
        for index, other in enumerate(role.depends_on):
            if other not in spec.roles:
                fail(("roles", role_name, "depends_on", index), f"unknown role {other!r} (roles: {', '.join(sorted(spec.roles))})")
    simulated = spec.provider.simulated
    for role_name in simulated.roles if simulated else ():
        if role_name not in spec.roles:
            fail(("provider", "simulated", "roles", role_name), f"unknown role {role_name!r} (roles: {', '.join(sorted(spec.roles))})")
    try:
        role_waves(spec, list(spec.roles))
    except ValueError as exc:
        fail(("roles",), str(exc))
    for env_name, env in spec.environments.items():
        for role_name in env.roles:
            if role_name not in spec.roles:
                fail(
                    ("environments", env_name, "roles", role_name),
                    f"unknown role {role_name!r} (roles: {', '.join(sorted(spec.roles))})",
                )
    for image_name, image in spec.images.items():
        for where, files in image.layer_files():
            for index, file in enumerate(files):
                try:
                    inside_project(loaded.project_dir, file)
                except ValueError as exc:
                    fail(("images", image_name, *where, index), str(exc))
                if not (loaded.project_dir / file).exists():
                    fail(("images", image_name, *where, index), f"{file!r} does not exist next to {name}")
            try:
                check_image_files(loaded.project_dir, files)
            except ImageFileError as exc:
                fail(("images", image_name, *where, exc.index), str(exc))
        for ref in ("base", "prebuilt"):
            manifest = getattr(image, ref) and getattr(image, ref).packer_manifest
            if manifest and not (loaded.project_dir / manifest).exists():
                fail(("images", image_name, ref, "packer_manifest"), f"{manifest!r} does not exist next to {name}")
    _check_boot_paths(loaded, fail)
    for role_name, role in spec.roles.items():
        for env_name, env in spec.environments.items():
            env_role = env.roles.get(role_name)
            if env_role is None:
                continue
            if role.discovery.type == "floating_ip" and env_role.count > 1:
                fail(
                    ("environments", env_name, "roles", role_name),
                    f"a floating IP points at one server; role {role_name} has discovery type floating_ip but {env_role.count} servers",
                )


def _check_boot_paths(loaded: LoadedSpec, fail) -> None:
    """Boot file sources and scripts are project files; secret files are inside the project
    or named by their absolute path (see paths.py)."""
    spec = loaded.spec
    layers: list[tuple[tuple, ConfigLayer]] = [(("defaults",), spec.defaults)]
    layers += [(("roles", role_name), role) for role_name, role in spec.roles.items()]
    for env_name, env in spec.environments.items():
        layers.append((("environments", env_name), env))
        layers += [(("environments", env_name, "roles", role_name), env_role) for role_name, env_role in env.roles.items()]
    for prefix, layer in layers:
        for index, file in enumerate(layer.files):
            if file.source is not None:
                try:
                    inside_project(loaded.project_dir, file.source)
                except ValueError as exc:
                    fail(prefix + ("files", index, "source"), str(exc))
        for index, script in enumerate(layer.scripts):
            try:
                inside_project(loaded.project_dir, script)
            except ValueError as exc:
                fail(prefix + ("scripts", index), str(exc))
    for env_name, env in spec.environments.items():
        for secret_name, source in env.secrets.items():
            if source.file is not None:
                try:
                    secret_file(loaded.project_dir, source.file)
                except ValueError as exc:
                    fail(("environments", env_name, "secrets", secret_name, "file"), str(exc))


def role_waves(spec: Spec, roles: list[str]) -> list[list[str]]:
    """Roles in waves: each after the roles it depends on (those among `roles`)."""
    remaining, done, waves = [r for r in spec.roles if r in roles], set(), []
    while remaining:
        wave = [r for r in remaining if all(d in done or d not in roles for d in spec.roles[r].depends_on)]
        if not wave:
            raise ValueError(f"depends_on forms a cycle among {', '.join(remaining)}")
        waves.append(wave)
        done.update(wave)
        remaining = [r for r in remaining if r not in done]
    return waves
