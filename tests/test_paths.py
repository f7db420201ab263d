"""A spec never reaches outside its project: image files (and the symlinks inside them), boot
file sources and boot scripts resolve inside the project; secret files live outside it only
by their absolute path. Refused when the spec is loaded (one line naming file:line and field,
exit code 2), and again where the files are read: a file may change in between."""

import os
from pathlib import Path

import pytest

from phoenixctl.boot import config, userdata
from phoenixctl.deadline import Deadline
from phoenixctl.drivers.local.compute import LocalCompute
from phoenixctl.errors import SpecError
from phoenixctl.example import init_example
from phoenixctl.boot.secrets import SecretResolver
from phoenixctl.spec import load_spec
from test_cli import line_of, replace_in, run  # the same CLI helpers as the other bad-input tests

FILES = "files: [app, VERSION]"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The example in tmp_path/project, with tmp_path/outside beside it (not in the project)."""
    init_example(tmp_path / "project")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s3cret\n")
    (outside / "secret").chmod(0o600)
    (outside / "data.txt").write_text("not the project's\n")
    return tmp_path / "project" / "phoenix.yaml"




def assert_refused(capsys, spec: Path, needle: str, *fragments: str, command: tuple[str, ...] = ("validate",)) -> str:
    code, _, err = run(capsys, *command, "-f", str(spec))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert f"phoenix.yaml:{line_of(spec, needle)}:" in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def validate_ok(capsys, spec: Path, *options: str) -> str:
    code, out, err = run(capsys, "validate", *options, "-f", str(spec))
    assert code == 0, err
    return out


# --- image files ---------------------------------------------------------------------------------


def test_image_file_linking_to_a_folder_outside_is_refused(capsys, project, tmp_path):
    (project.parent / "app" / "shared").symlink_to(tmp_path / "outside", target_is_directory=True)
    assert_refused(
        capsys, project, FILES,
        f"images.web.layers.1.files.0: app/shared resolves outside the project ({tmp_path / 'outside'})",
    )


def test_image_files_entry_that_is_a_link_outside_is_refused(capsys, project, tmp_path):
    (project.parent / "assets").symlink_to(tmp_path / "outside", target_is_directory=True)
    replace_in(project, FILES, "files: [app, VERSION, assets]")
    assert_refused(capsys, project, "files: [app, VERSION, assets]", "images.web.layers.1.files.2: assets resolves outside the project")
    # every command loads the spec the same way: bake refuses before copying anything
    assert_refused(capsys, project, "files: [app, VERSION, assets]", "images.web.layers.1.files.2", command=("bake",))
    assert not list((project.parent / ".phoenix" / "images").glob("img-*"))


def test_image_file_linking_to_etc_passwd_is_refused(capsys, project):
    (project.parent / "app" / "users").symlink_to("/etc/passwd")
    assert_refused(capsys, project, FILES, "images.web.layers.1.files.0: app/users resolves outside the project (/etc/passwd)")


def test_image_files_entry_linking_to_etc_passwd_is_refused(capsys, project):
    (project.parent / "users").symlink_to("/etc/passwd")
    replace_in(project, FILES, "files: [app, VERSION, users]")
    assert_refused(capsys, project, "files: [app, VERSION, users]", "images.web.layers.1.files.2: users resolves outside the project (/etc/passwd)")


def test_a_relative_link_climbing_out_is_refused(capsys, project):
    (project.parent / "app" / "up").symlink_to("../../outside/data.txt")
    assert_refused(capsys, project, FILES, "images.web.layers.1.files.0: app/up resolves outside the project")


def test_a_link_to_a_project_file_the_image_does_not_hold_is_refused(capsys, project):
    (project.parent / "notes.txt").write_text("kept out of the image\n")
    (project.parent / "app" / "notes").symlink_to("../notes.txt")
    assert_refused(capsys, project, FILES, "images.web.layers.1.files.0: app/notes points to notes.txt, which is not among the image's files")


def test_links_inside_the_image_stay_links_in_the_baked_image(capsys, project):
    app = project.parent / "app"
    (app / "current.py").symlink_to("server.py")  # beside its target
    (app / "sub").mkdir()
    (app / "sub" / "version").symlink_to("../../VERSION")  # another entry of the image's files
    (app / "pinned.py").symlink_to(app.resolve() / "server.py")  # absolute, into the project
    (app / "here").symlink_to(".", target_is_directory=True)
    validate_ok(capsys, project)
    code, out, err = run(capsys, "bake", "-f", str(project))
    assert code == 0, err
    [rootfs] = (project.parent / ".phoenix" / "images").glob("img-web-*/rootfs")
    links = {path: os.readlink(rootfs / path) for path in ("app/current.py", "app/sub/version", "app/pinned.py", "app/here")}
    assert all((rootfs / path).is_symlink() for path in links), links
    # relative, to the image's own copy: never back into the project
    assert links == {"app/current.py": "server.py", "app/sub/version": "../../VERSION", "app/pinned.py": "server.py", "app/here": "."}
    assert (rootfs / "app" / "pinned.py").resolve() == (rootfs / "app" / "server.py").resolve()
    assert (rootfs / "app" / "sub" / "version").read_text() == (project.parent / "VERSION").read_text()


def test_a_link_changes_the_image_id(capsys, project):
    run(capsys, "bake", "-f", str(project))
    (project.parent / "app" / "current.py").symlink_to("server.py")
    code, out, err = run(capsys, "bake", "-f", str(project))
    assert code == 0, err
    assert len(list((project.parent / ".phoenix" / "images").glob("img-web-*"))) == 2


def test_an_entry_linking_inside_the_project_is_copied(capsys, project):
    (project.parent / "site").symlink_to("app", target_is_directory=True)
    replace_in(project, FILES, "files: [app, VERSION, site]")
    validate_ok(capsys, project)
    code, _, err = run(capsys, "bake", "-f", str(project))
    assert code == 0, err
    [rootfs] = (project.parent / ".phoenix" / "images").glob("img-web-*/rootfs")
    assert (rootfs / "site" / "server.py").is_file() and not (rootfs / "site").is_symlink()


def test_the_bake_refuses_a_link_made_after_the_spec_was_loaded(project, tmp_path):
    loaded = load_spec(project)
    (project.parent / "app" / "shared").symlink_to(tmp_path / "outside", target_is_directory=True)
    compute = LocalCompute(tmp_path / "work", "website")
    recipe = loaded.spec.images["web"]
    with pytest.raises(SpecError, match=r"app/shared resolves outside the project"):
        compute.image_id("web", recipe, loaded.project_dir)
    with pytest.raises(SpecError, match=r"bake of image web: app/shared resolves outside the project"):
        compute._copy_files("web", ("layers", 1, "files"), recipe.layers[1].files, loaded.project_dir, tmp_path / "rootfs")
    assert not (tmp_path / "rootfs" / "app" / "shared").is_symlink()
    with pytest.raises(SpecError, match=r"images.web.layers.1.files.0: app/shared resolves outside the project"):
        compute.bake("web", recipe, loaded.project_dir, Deadline(60, "bake"))
    assert not compute.images_dir.exists() or not list(compute.images_dir.iterdir())  # nothing made


# --- boot files and scripts ------------------------------------------------------------------------


def test_boot_file_source_climbing_out_is_refused(capsys, project):
    replace_in(project, "    port: 8081\n", "    port: 8081\n    files:\n      - {path: passwd, source: ../../etc/passwd}\n")
    assert_refused(capsys, project, "source: ../../etc/passwd", "roles.backend.files.0.source: ../../etc/passwd resolves outside the project")


def test_boot_file_source_reaching_etc_passwd_is_refused(capsys, project):
    source = "../" * 40 + "etc/passwd"
    replace_in(project, "    port: 8081\n", f"    port: 8081\n    files:\n      - {{path: passwd, source: {source}}}\n")
    assert_refused(capsys, project, "source: ../", "roles.backend.files.0.source:", "resolves outside the project (/etc/passwd)")


def test_boot_file_source_linking_outside_is_refused(capsys, project):
    (project.parent / "motd").symlink_to("/etc/passwd")
    replace_in(project, "  ci:\n", "  ci:\n    files: [{path: motd, source: motd}]\n")
    assert_refused(capsys, project, "source: motd", "environments.ci.files.0.source: motd resolves outside the project (/etc/passwd)")


def test_boot_script_outside_is_refused(capsys, project):
    replace_in(project, "    port: 8081\n", "    port: 8081\n    scripts: [/etc/hostname]\n")
    assert_refused(capsys, project, "scripts: [/etc/hostname]", "roles.backend.scripts.0: /etc/hostname resolves outside the project")


def test_boot_files_and_scripts_inside_are_fine(capsys, project):
    (project.parent / "boot").mkdir()
    (project.parent / "boot" / "setup.sh").write_text("#!/bin/sh\ntrue\n")
    (project.parent / "boot" / "motd").write_text("hello\n")
    replace_in(project, "    port: 8081\n", "    port: 8081\n    scripts: [boot/setup.sh]\n    files: [{path: motd, source: boot/motd}]\n")
    validate_ok(capsys, project)
    code, out, err = run(capsys, "userdata", "ci", "backend", "-f", str(project))
    assert code == 0, err
    assert "hello" in out


def test_user_data_refuses_files_changed_after_the_spec_was_loaded(project, tmp_path):
    (project.parent / "boot").mkdir()
    (project.parent / "boot" / "setup.sh").write_text("#!/bin/sh\ntrue\n")
    (project.parent / "boot" / "motd").write_text("hello\n")
    replace_in(project, "    port: 8081\n", "    port: 8081\n    scripts: [boot/setup.sh]\n    files: [{path: motd, source: boot/motd}]\n")
    loaded = load_spec(project)
    merged = config.merge(loaded, tmp_path / "work", "ci", "backend", {})
    userdata.render(loaded, merged, {}, "redact", None)  # fine as loaded

    (project.parent / "boot" / "motd").unlink()
    (project.parent / "boot" / "motd").symlink_to("/etc/passwd")
    with pytest.raises(SpecError, match=r"phoenix.yaml:\d+: roles.backend.files.0.source: boot/motd resolves outside the project \(/etc/passwd\)"):
        userdata.render(loaded, merged, {}, "redact", None)

    (project.parent / "boot" / "motd").unlink()
    (project.parent / "boot" / "motd").write_text("hello\n")
    (project.parent / "boot" / "setup.sh").unlink()
    (project.parent / "boot" / "setup.sh").symlink_to("/etc/passwd")
    with pytest.raises(SpecError, match=r"phoenix.yaml:\d+: roles.backend.scripts.0: boot/setup.sh resolves outside the project"):
        userdata.render(loaded, merged, {}, "redact", None)


# --- secrets -----------------------------------------------------------------------------------------


def test_secret_file_by_relative_path_out_of_the_project_is_refused(capsys, project):
    replace_in(project, "tls_cert: {file: secrets/ci/tls.crt}", "tls_cert: {file: ../outside/secret}")
    err = assert_refused(
        capsys, project, "file: ../outside/secret", "environments.ci.secrets.tls_cert.file: ../outside/secret leaves the project"
    )
    assert "by its absolute path" in err


def test_secret_file_linking_out_of_the_project_is_refused(capsys, project, tmp_path):
    (project.parent / "secrets" / "ci" / "elsewhere").symlink_to(tmp_path / "outside" / "secret")
    replace_in(project, "tls_cert: {file: secrets/ci/tls.crt}", "tls_cert: {file: secrets/ci/elsewhere}")
    err = assert_refused(capsys, project, "file: secrets/ci/elsewhere", "environments.ci.secrets.tls_cert.file: secrets/ci/elsewhere resolves outside")
    assert "by its absolute path" in err


def test_secret_file_by_absolute_path_outside_the_project_is_accepted(capsys, project, tmp_path):
    secret = tmp_path / "outside" / "secret"
    replace_in(project, "tls_cert: {file: secrets/ci/tls.crt}", f"tls_cert: {{file: {secret}}}")
    out = validate_ok(capsys, project, "--resolve-secrets")
    assert "secrets: 6 resolved" in out  # each environment's TLS pair: ci's, ci-legacy's, production's
    assert SecretResolver(load_spec(project), tmp_path / "work").resolve("ci")["tls_cert"] == b"s3cret"


def test_secret_resolution_refuses_a_file_changed_after_the_spec_was_loaded(project, tmp_path):
    loaded = load_spec(project)
    crt = project.parent / "secrets" / "ci" / "tls.crt"
    crt.unlink()
    crt.symlink_to(tmp_path / "outside" / "secret")
    with pytest.raises(SpecError, match=r"environments.ci.secrets.tls_cert: secrets/ci/tls.crt resolves outside the project"):
        SecretResolver(loaded, tmp_path / "work").resolve("ci")
