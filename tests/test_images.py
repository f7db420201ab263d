"""Images you can trust and rebuild fast (issue 16): layers with a cache, hermetic bakes and
servers, `phoenix images` and `phoenix images prune`.

Real bakes (real shell steps in real folders), real servers and `phoenix` as a subprocess;
the projects are tiny and local: nothing here needs the network. Each step that must run (or
must not) appends a line to a file outside the image, so a cache hit is seen, not timed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from conftest import copy_example, destroy_quietly, phoenix
from phoenixctl.deadline import Deadline
from phoenixctl.drivers.local.compute import LocalCompute
from phoenixctl.engine import Executor, Project
from phoenixctl.engine.images import ImageCatalog
from phoenixctl.errors import PhoenixError, SpecError
from phoenixctl.spec import ImageSpec
from phoenixctl.state import ImageRow, ReleaseRow


def layered(runs: Path, **extra) -> ImageSpec:
    """Two layers, each step recording that it ran in `runs`."""
    return ImageSpec(
        layers=[
            {"name": "deps", "files": ["requirements.txt"], "steps": [f"echo deps >> {runs}", "mkdir -p venv/bin"]},
            {"name": "code", "files": ["app"], "steps": [f"echo code >> {runs}"]},
        ],
        start="python app/server.py", **extra,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "project" / "app").mkdir(parents=True)
    (tmp_path / "project" / "requirements.txt").write_text("tiny==1.0\n")
    (tmp_path / "project" / "app" / "server.py").write_text("print('v1')\n")
    return tmp_path / "project"


def bake(compute: LocalCompute, recipe: ImageSpec, project: Path, **options):
    return compute.bake("web", recipe, project, Deadline(60, "bake"), **options)


def ran(runs: Path) -> list[str]:
    lines = runs.read_text().splitlines() if runs.exists() else []
    runs.write_text("")
    return lines


# --- layers and their cache ----------------------------------------------------------------------


def test_a_layer_is_reused_when_only_a_later_layers_files_change(project, tmp_path):
    compute, runs = LocalCompute(tmp_path / "work", "p"), tmp_path / "runs"
    recipe = layered(runs)
    first = bake(compute, recipe, project)
    assert ran(runs) == ["deps", "code"] and [layer.cached for layer in first.layers] == [False, False]

    (project / "app" / "server.py").write_text("print('v2')\n")
    second = bake(compute, recipe, project)
    assert ran(runs) == ["code"]  # the deps layer's steps did not run again
    assert [(layer.name, layer.cached) for layer in second.layers] == [("deps", True), ("code", False)]
    assert second.image_id != first.image_id
    assert (Path(second.location) / "rootfs" / "venv" / "bin").is_dir()  # what the reused layer made is there
    assert (Path(second.location) / "rootfs" / "app" / "server.py").read_text() == "print('v2')\n"

    again = bake(compute, recipe, project)
    assert again.cached and ran(runs) == []


def test_a_layer_is_rebuilt_when_its_own_files_change_and_so_is_every_layer_above(project, tmp_path):
    compute, runs = LocalCompute(tmp_path / "work", "p"), tmp_path / "runs"
    recipe = layered(runs)
    bake(compute, recipe, project)
    ran(runs)
    (project / "requirements.txt").write_text("tiny==1.1\n")
    result = bake(compute, recipe, project)
    assert ran(runs) == ["deps", "code"]  # the code layer's files did not change, the layer below did
    assert [layer.cached for layer in result.layers] == [False, False]


def test_an_earlier_layers_steps_or_the_images_variables_rebuild_the_layers(project, tmp_path):
    compute, runs = LocalCompute(tmp_path / "work", "p"), tmp_path / "runs"
    bake(compute, layered(runs), project)
    ran(runs)
    changed = layered(runs).model_dump()
    changed["layers"][0]["steps"].append("true")
    bake(compute, ImageSpec(**changed), project)
    assert ran(runs) == ["deps", "code"]
    bake(compute, layered(runs, env={"MODE": "fast"}), project)
    assert ran(runs) == ["deps", "code"]


def test_a_bake_from_the_cache_never_changes_the_cached_layer(project, tmp_path):
    """The cached layer's files are hard-linked into the next bake: a later layer's file copied
    over one of them replaces it; a step writing into one in place drops the layer from the cache."""
    compute, runs = LocalCompute(tmp_path / "work", "p"), tmp_path / "runs"
    (project / "pinned.txt").write_text("from the project\n")
    recipe = ImageSpec(
        layers=[
            {"name": "deps", "files": ["requirements.txt"], "steps": [f"echo deps >> {runs}", "cp requirements.txt pinned.txt",
                                                                      "cp requirements.txt log.txt"]},
            {"name": "code", "files": ["app", "pinned.txt"], "steps": ["if [ -e app/append ]; then echo appended >> log.txt; fi"]},
        ],
        start="true",
    )
    bake(compute, recipe, project)
    ran(runs)
    [layer] = (compute.images_dir / "layers").iterdir()

    (project / "app" / "server.py").write_text("print('v2')\n")
    result = bake(compute, recipe, project)
    assert [entry.cached for entry in result.layers] == [True, False] and ran(runs) == []
    assert (Path(result.location) / "rootfs" / "pinned.txt").read_text() == "from the project\n"
    assert (layer / "rootfs" / "pinned.txt").read_text() == "tiny==1.0\n"  # replaced in the bake, not written through

    (project / "app" / "append").write_text("")
    result = bake(compute, recipe, project)
    assert (Path(result.location) / "rootfs" / "log.txt").read_text() == "tiny==1.0\nappended\n"  # right in the image
    assert not layer.exists()  # written into in place: that layer is no longer trusted

    (project / "app" / "server.py").write_text("print('v3')\n")
    bake(compute, recipe, project)
    assert ran(runs) == ["deps"]  # built again from the project, not from a changed copy


def test_no_cache_runs_every_layer_again(project, tmp_path):
    compute, runs = LocalCompute(tmp_path / "work", "p"), tmp_path / "runs"
    first = bake(compute, layered(runs), project)
    ran(runs)
    again = bake(compute, layered(runs), project, no_cache=True)
    assert ran(runs) == ["deps", "code"] and not again.cached and again.image_id == first.image_id
    assert (Path(again.location) / "manifest.json").is_file()


def test_the_single_layer_form_is_one_layer(project, tmp_path):
    compute = LocalCompute(tmp_path / "work", "p")
    result = bake(compute, ImageSpec(files=["app"], steps=["test -f app/server.py"], start="true"), project)
    assert [(layer.name, layer.cached) for layer in result.layers] == [("1", False)]
    assert not (compute.images_dir / "layers").exists()  # the last layer is the image itself


# --- hermetic ------------------------------------------------------------------------------------


def test_a_step_needing_a_tool_only_the_hosts_path_has_fails_the_bake(project, tmp_path, monkeypatch):
    host_bin = tmp_path / "host-bin"
    host_bin.mkdir()
    (host_bin / "only-on-this-host").write_text("#!/bin/sh\necho made-by-the-host\n")
    (host_bin / "only-on-this-host").chmod(0o755)
    monkeypatch.setenv("PATH", f"{host_bin}:{os.environ['PATH']}")
    monkeypatch.setenv("HOST_SECRET", "from the shell")
    compute = LocalCompute(tmp_path / "work", "p")
    recipe = ImageSpec(files=["app"], steps=["only-on-this-host > made.txt"], start="true")
    with pytest.raises(PhoenixError, match=r"bake of image web: step 1 \('only-on-this-host > made.txt'\) exited 127: .*not found"):
        bake(compute, recipe, project)

    # shipped in the image's own bin directory, the same tool is found; the shell's variables are not
    (project / "bin").mkdir()
    (project / "bin" / "only-on-this-host").write_text("#!/bin/sh\necho shipped\n")
    (project / "bin" / "only-on-this-host").chmod(0o755)
    steps = ["only-on-this-host > made.txt", 'echo "${HOST_SECRET:-unset} $HOME $PYTHONNOUSERSITE" > env.txt']
    result = bake(compute, ImageSpec(files=["app", "bin"], steps=steps, env={"DECLARED": "yes"}, start="true"), project)
    rootfs = Path(result.location) / "rootfs"
    assert (rootfs / "made.txt").read_text() == "shipped\n"
    unset, home, nousersite = (rootfs / "env.txt").read_text().split()
    assert unset == "unset" and nousersite == "1"
    assert Path(home).is_relative_to(compute.images_dir) and not Path(home).is_relative_to(Path.home())


def test_the_runtime_is_named_and_recorded_in_the_manifest(project, tmp_path):
    compute = LocalCompute(tmp_path / "work", "p")
    recipe = ImageSpec(files=["app"], steps=['"$PHOENIX_RUNTIME" -c "import sys; print(sys.prefix)" > prefix.txt'],
                       runtime="python3", start="python3 app/server.py")
    result = bake(compute, recipe, project)
    manifest = json.loads((Path(result.location) / "manifest.json").read_text())
    assert manifest["runtime"]["path"] == "/usr/bin/python3" and manifest["runtime"]["version"].startswith("Python 3")
    assert manifest["interpreter"]["path"] == "/usr/bin/python3"  # the start command's, found on the image's PATH
    assert (Path(result.location) / "rootfs" / "prefix.txt").read_text().strip() == "/usr"  # not phoenix's virtualenv
    missing = ImageSpec(files=["app"], runtime="python2.1", start="true")
    with pytest.raises(SpecError, match=r"images.web.runtime: runtime 'python2.1' is not on the system PATH"):
        bake(compute, missing, project)


@pytest.mark.slow
def test_a_server_importing_what_its_image_lacks_fails_its_boot_gate_with_the_import_error(tmp_path_factory):
    """The example's server needs aiohttp. Phoenix's own interpreter has it; an image that does
    not ship it (no deps layer: the system python3) fails the gate here as on any runner."""
    spec_path = copy_example(tmp_path_factory, "hermetic")
    data = yaml.safe_load(spec_path.read_text())
    data["images"]["web"] = {"runtime": "python3", "files": ["app", "VERSION"], "start": "python3 app/server.py"}
    data["environments"]["ci"]["roles"] = {"backend": 1}
    data["defaults"]["deadlines"].update(boot="10s", health="5s")
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        result = phoenix(spec_path, "up", "ci")
        assert result.returncode == 1, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert re.search(r"server backend-[0-9a-f]{6} failed its boot gate: its process exited; see .*\.log: .*"
                         r"ModuleNotFoundError: No module named 'aiohttp'", last), result.stderr
    finally:
        destroy_quietly(spec_path, "ci")


# --- the example, and pruning ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_example_deploys_with_layers_and_a_code_change_reuses_its_dependencies(tmp_path_factory):
    spec_path = copy_example(tmp_path_factory, "layers", cached_layers=False)
    data = yaml.safe_load(spec_path.read_text())
    data["environments"]["ci"]["roles"] = {"backend": 1}
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        baked = phoenix(spec_path, "bake", "--json")
        assert baked.returncode == 0, baked.stderr
        [image] = json.loads(baked.stdout)
        assert [(layer["name"], layer["cached"]) for layer in image["layers"]] == [("deps", False), ("code", False)]
        assert phoenix(spec_path, "up", "ci").returncode == 0

        server = spec_path.parent / "app" / "server.py"
        server.write_text(server.read_text() + "\n# a one-line change\n")
        deployed = phoenix(spec_path, "deploy", "ci")
        assert deployed.returncode == 0, deployed.stderr
        history = phoenix(spec_path, "history", "ci", "--json")
        latest = json.loads(history.stdout)[0]
        assert latest["kind"] == "deploy" and "layers: web: deps hit, code built" in latest["summary"], latest

        listed = phoenix(spec_path, "images", "--json")
        entries = {entry["id"]: entry for entry in json.loads(listed.stdout)}
        assert len(entries) == 2
        serving = next(entry for entry in entries.values() if entry["servers"])
        assert serving["servers"] == {"ci": 1} and "ci: current" in serving["releases"]
        assert [layer["name"] for layer in serving["layers"]] == ["deps", "code"]
        assert len({entry["layers"][0]["key"] for entry in entries.values()}) == 1  # one deps layer for both
    finally:
        destroy_quietly(spec_path, "ci")


def releases_of(catalog_project: Project, env: str, *image_ids: str) -> None:
    """Record releases, oldest first, each serving one image (what deploys leave behind)."""
    for number, image_id in enumerate(image_ids):
        catalog_project.store.add_release(ReleaseRow(
            env=env, operation_id=f"op-{number}", kind="deploy", reason="", spec_text="",
            image_ids=json.dumps({"web": image_id}), fingerprints=json.dumps({"web": image_id}),
        ))


def test_prune_keeps_what_a_rollback_needs(tmp_path):
    spec = tmp_path / "project" / "phoenix.yaml"
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "VERSION").write_text("0\n")
    spec.write_text(
        "project: prune\nimages:\n  web:\n    layers:\n      - {name: base, steps: ['mkdir -p venv/bin']}\n"
        "      - {name: code, files: [VERSION]}\n    start: python3 -m http.server\n"
        "roles:\n  web: {image: web, port: 8080}\nenvironments:\n  ci:\n    roles: {web: 1}\n"
    )
    project = Project(spec)
    try:
        executor = Executor(project)
        ids = []
        for version in ("1", "2", "3", "4"):  # the spec as it stands bakes the fourth
            (tmp_path / "project" / "VERSION").write_text(f"{version}\n")
            ids.append(executor.bake()[0][1])
        oldest, previous, current, next_one = ids
        releases_of(project, "ci", oldest, previous, current)
        catalog = ImageCatalog(executor.engine)
        uses = {entry.id: entry.releases for entry in catalog.entries()}
        assert uses[current] == ["ci: current"] and uses[previous] == ["ci: rollback target (op-1)"] and uses[oldest] == []

        with pytest.raises(PhoenixError, match=rf"a rollback would go back to {previous} \(ci: rollback target \(op-1\)\); nothing removed"):
            catalog.prune(keep=1, force=False)
        assert {row.id for row in project.store.images()} == set(ids)  # refused whole

        pruned = catalog.prune(keep=2, force=False)
        assert pruned.removed == [oldest]
        assert set(pruned.kept) == {previous, current, next_one}
        assert not (project.workdir / "images" / oldest).exists() and (project.workdir / "images" / previous / "manifest.json").is_file()
        assert pruned.layers_removed == []  # the base layer: every image left was built on it

        forced = catalog.prune(keep=1, force=True)
        assert forced.removed == [previous] and set(forced.kept) == {current, next_one}
    finally:
        project.close()


def test_prune_never_removes_an_image_a_server_runs(tmp_path):
    spec = tmp_path / "project" / "phoenix.yaml"
    (tmp_path / "project").mkdir()
    spec.write_text(
        "project: prune\nimages:\n  web: {start: python3 -m http.server}\n"
        "roles:\n  web: {image: web, port: 8080}\nenvironments:\n  ci:\n    roles: {web: 1}\n"
    )
    project = Project(spec)
    try:
        from phoenixctl.state import ServerRow

        project.store.save_image(ImageRow(id="img-web-0123456789abcdef", name="web", provider="local",
                                          location=str(project.workdir / "images" / "img-web-0123456789abcdef")))
        project.store.add_server(ServerRow(id="web-abc123", env="ci", role="web", image_id="img-web-0123456789abcdef",
                                           fingerprint="f", address="127.0.0.1", port=8080, state="in_service"))
        result = ImageCatalog(Executor(project).engine).prune(keep=1, force=True)
        assert result.removed == [] and result.kept == {"img-web-0123456789abcdef": "servers run from it: ci (1)"}
    finally:
        project.close()


def test_the_images_command_lists_and_prunes(project, tmp_path):
    spec = project / "phoenix.yaml"
    spec.write_text(
        "project: listing\nimages:\n  web:\n    files: [app]\n    start: python3 app/server.py\n"
        "roles:\n  web: {image: web, port: 8080}\nenvironments:\n  ci:\n    roles: {web: 1}\n"
    )
    baked = phoenix(spec, "bake")
    assert baked.returncode == 0, baked.stderr
    assert re.search(r"web: img-web-[0-9a-f]{16} \(baked in [0-9.]+s\)\n  layer 1: built in [0-9.]+s, [0-9.]+ (B|kB) \(", baked.stdout), baked.stdout
    assert "layer 1: cache hit" in phoenix(spec, "bake").stdout
    (project / "app" / "server.py").write_text("print('v2')\n")
    assert phoenix(spec, "bake").returncode == 0
    listed = phoenix(spec, "images")
    assert listed.returncode == 0 and listed.stdout.count("img-web-") == 2, listed.stdout
    pruned = phoenix(spec, "images", "prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    result = json.loads(pruned.stdout)
    assert len(result["removed"]) == 1 and list(result["kept"].values()) == ["the spec as it stands bakes it"]


def test_drift_reads_only_the_files_changed_since_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A server's tree holds its image's dependencies: a check of drift hashes again only the
    files whose size or modification time moved, and still sees an edit of the same size."""
    from phoenixctl.drivers.local import images

    root = tmp_path / "root"
    (root / "venv").mkdir(parents=True)
    for n in range(20):
        (root / "venv" / f"module{n}.py").write_text(f"VALUE = {n}\n")
    (root / "app.py").write_text("print('v1')\n")
    booted = images.file_manifest(root)
    hashed = []
    real_hash = images.file_sha256
    monkeypatch.setattr(images, "file_sha256", lambda path: hashed.append(path.name) or real_hash(path))
    assert all(images.same_file(a, booted[p]) for p, a in images.file_manifest(root, booted).items())
    assert hashed == []
    (root / "app.py").write_text("print('v2')\n")  # same size, new content
    now = images.file_manifest(root, booted)
    assert hashed == ["app.py"]
    assert [p for p in booted if not images.same_file(now[p], booted[p])] == ["app.py"]
