"""``odzoo pack`` / ``odzoo import`` at the trust boundary: a bundle adds models but never changes
what an official archive is trusted to be, its entries hold no links that leave them, a non-bundle
is refused from its first header, and a pack never leaves a half bundle."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
from cli_calls import one_line, run
from tarball_fixture import CENTERNET, SSD, assert_cache_whole, hostile

import zoo.hub.bundle as bundle_module
from zoo.errors import IntegrityError, UnsafeArchiveError
from zoo.hub import fetch, import_bundle, layout_for, pack, read_manifest, trust, verify
from zoo.registry import get

pytestmark = pytest.mark.usefixtures("mirror")

ALIAS = "ssd_mobilenet_v2_fpnlite_320"
FAKE = "e" * 64


def forge(src, dst, *, digest=None, rename=None, source=None, config=None, add=()):
    """Rewrite a bundle as someone with other intentions might: another archive digest, another
    entry name or source URL, another pipeline.config (manifest updated to match), added members."""
    with tarfile.open(src) as tin:
        members = [(m, tin.extractfile(m).read() if m.isreg() else None) for m in tin]
    old = next(m.name.split("/")[1] for m, _ in members if m.name.startswith("models/"))
    new = rename or old
    out = []
    for member, data in members:
        if member.name.startswith(f"models/{old}"):
            member.name = f"models/{new}" + member.name[len(f"models/{old}"):]
        if member.name == "odzoo-bundle.json":
            index = json.loads(data)
            index["entries"] = [new]
            data = json.dumps(index).encode()
        elif member.name == f"models/{new}/pipeline.config" and config is not None:
            data = config
        out.append((member, data))
    for member, data in out:
        if member.name == f"models/{new}/.odzoo-manifest.json":
            manifest = json.loads(data)
            manifest["name"] = new
            manifest["archive"]["sha256"] = digest or manifest["archive"]["sha256"]
            manifest["source"] = source or manifest["source"]
            if config is not None:
                for rec in manifest["files"]:
                    if rec[0] == "pipeline.config":
                        rec[1], rec[2] = len(config), hashlib.sha256(config).hexdigest()
            for name, target in add:
                manifest["symlinks"][name] = target
            member_data = json.dumps(manifest).encode()
            out[out.index((member, data))] = (member, member_data)
    with tarfile.open(dst, "w") as tout:
        for member, data in out:
            if data is not None:
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)
        for name, target in add:
            link = tarfile.TarInfo(f"models/{new}/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, target
            tout.addfile(link)
    return dst


@pytest.fixture
def bundles(server, capsys, tmp_path):
    """A genuine bundle of the registry's SSD (downloaded from its official URL through the mirror)
    and a forged one claiming the same official URL with a made-up digest and another config."""
    assert run(capsys, "download", ALIAS)[0] == 0
    genuine = tmp_path / "genuine.tar"
    assert run(capsys, "pack", ALIAS, "-o", str(genuine))[0] == 0
    evil = forge(genuine, tmp_path / "evil.tar", digest=FAKE, config=b"model { ssd { num_classes: 1 } }\n")
    return genuine, evil


def use_cache(monkeypatch, path):
    monkeypatch.setenv("ODZOO_CACHE", str(path))
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    return layout_for()


def archive_of(layout, name=SSD) -> str:
    return read_manifest(layout.entry(name)).archive_sha256


def test_bundle_never_pins_or_replaces_an_official_model(bundles, capsys, tmp_path, monkeypatch):
    genuine, evil = bundles
    official = get(SSD).url
    layout = use_cache(monkeypatch, tmp_path / "fresh")
    code, out, _ = run(capsys, "import", str(evil))
    assert code == 0 and f"imported {SSD}" in out  # may add a model where none is cached ...
    assert trust.recorded(layout, official) is None  # ... but not decide what the official URL is
    assert official not in (json.loads(layout.digests.read_text()) if layout.digests.exists() else {})

    layout = use_cache(monkeypatch, tmp_path / "healthy")
    assert run(capsys, "import", str(genuine))[0] == 0
    real = archive_of(layout)
    for extra in ([], ["--force"]):
        code, out, _ = run(capsys, "import", str(evil), *extra)
        assert code == 1 and f"kept {SSD}" in out and "--trust" in out, out
        assert archive_of(layout) == real and assert_cache_whole(layout.root) == [SSD]
    assert trust.recorded(layout, official) is None
    code, out, _ = run(capsys, "import", str(evil), "--trust")  # the user's explicit word
    assert code == 0 and f"replaced {SSD}" in out
    assert archive_of(layout) == FAKE and trust.recorded(layout, official)["sha256"] == FAKE
    code, _, err = run(capsys, "import", str(genuine))
    assert code == 2 and "recorded" in one_line(err)


def test_bundle_under_another_name_cannot_pin_an_official_url(bundles, tmp_path, monkeypatch):
    genuine, _ = bundles
    official = get(SSD).url
    renamed = forge(genuine, tmp_path / "renamed.tar", rename="my-ssd", digest=FAKE)
    own = forge(genuine, tmp_path / "own.tar", rename="my-own", digest=FAKE,
                source="https://models.example.org/my-own.tar.gz")
    layout = use_cache(monkeypatch, tmp_path / "other")
    assert [i.status for i in import_bundle(layout, renamed)] == ["imported"]
    assert trust.recorded(layout, official) is None
    assert [i.status for i in import_bundle(layout, own)] == ["imported"]  # its own model: pinned
    assert trust.recorded(layout, "https://models.example.org/my-own.tar.gz")["sha256"] == FAKE
    assert assert_cache_whole(layout.root) == ["my-own", "my-ssd"]
    assert not import_bundle(layout, own)[0].status == "replaced"


@pytest.mark.parametrize("target", ["../..", "..", "../other-entry", "checkpoint/../../.."])
def test_bundled_links_must_stay_inside_their_entry(bundles, tmp_path, monkeypatch, target):
    genuine, _ = bundles
    linked = forge(genuine, tmp_path / "linked.tar", add=[("escape", target)])
    layout = use_cache(monkeypatch, tmp_path / "other")
    with pytest.raises(IntegrityError, match="links leaving the entry: escape"):
        import_bundle(layout, linked, trust=True)
    assert assert_cache_whole(layout.root) == []
    assert not any(layout.tmp.rglob("*.json"))  # the work folder is gone too


def test_a_link_leaving_a_cached_entry_makes_it_damaged(zoo, isolated_env):
    entry = fetch(zoo[SSD].path)
    os.symlink("../..", entry / "root")
    (result,) = verify(layout_for(), repair=False)
    assert result.status == "damaged" and "links leaving the entry: root" in result.detail


def _bundle_like(path, index: bytes, then):
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("odzoo-bundle.json")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
        then(tar)
    return path


def _huge(tar):
    info = tarfile.TarInfo("models/x/huge.bin")
    info.size = 80 << 30  # header only: nothing may try to unpack it
    tar.addfile(info)


def test_non_bundles_are_refused_from_the_first_header(zoo, capsys, tmp_path, monkeypatch, isolated_env):
    calls = []
    real_extract = bundle_module.extract
    monkeypatch.setattr(bundle_module, "extract", lambda *a, **k: calls.append(a) or real_extract(*a, **k))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 100)
    cases = {
        zoo[SSD].path: "first member",
        hostile("absolute", tmp_path / "h.tar.gz"): "first member",
        text: "not a readable tar",
        _bundle_like(tmp_path / "v2.tar", b'{"format": 2, "entries": ["x"]}', _huge): "format 2",
        _bundle_like(tmp_path / "names.tar", b'{"format": 1, "entries": ["../x"]}', _huge): "cannot name",
        _bundle_like(tmp_path / "junk.tar", b"\x00not json", _huge): "odzoo-bundle.json",
    }
    for path, why in cases.items():
        code, _, err = run(capsys, "import", str(path))
        line = one_line(err)
        assert code == 2 and "is not an odzoo bundle" in line and why in line, line
    assert calls == []  # nothing was unpacked
    assert assert_cache_whole(isolated_env) == []


def test_bundle_unpacks_no_more_bytes_than_it_holds(tmp_path, isolated_env):
    index = json.dumps({"format": 1, "entries": ["x"]}).encode()
    block = os.urandom(256 << 10)

    def amplify(tar):
        folder = tarfile.TarInfo("models/x")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        info = tarfile.TarInfo("models/x/big")
        info.size = len(block)
        tar.addfile(info, io.BytesIO(block))
        for i in range(40):  # 40 hard links: 10 MiB out of a 0.3 MiB bundle
            link = tarfile.TarInfo(f"models/x/copy{i}")
            link.type, link.linkname = tarfile.LNKTYPE, "models/x/big"
            tar.addfile(link)

    path = _bundle_like(tmp_path / "amplified.tar", index, amplify)
    with pytest.raises(UnsafeArchiveError, match="unpacks to more than"):
        import_bundle(layout_for(), path)
    assert assert_cache_whole(isolated_env) == []
    assert sum(f.stat().st_size for f in (isolated_env / "tmp").rglob("*") if f.is_file()) == 0


def test_import_repairs_a_quarantined_entry(bundles, capsys, isolated_env, monkeypatch):
    genuine, _ = bundles
    entry = isolated_env / "models" / SSD
    (entry / "pipeline.config").write_text("damaged")
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    monkeypatch.setenv("ODZOO_MIRROR", "")
    assert verify(layout_for())[0].status == "quarantined"
    code, out, _ = run(capsys, "import", str(genuine))
    assert code == 0 and f"replaced {SSD}" in out
    assert verify(layout_for())[0].status == "ok" and assert_cache_whole(isolated_env) == [SSD]


def _unwritable(tmp_path):
    if os.geteuid() == 0:  # permission bits do not stop root: a folder where nothing can be created
        return "/proc/odzoo-bundle.tar"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / "b.tar")


def test_pack_output_is_checked_before_any_work(zoo, capsys, tmp_path, monkeypatch, isolated_env):
    fetch(zoo[SSD].path)
    calls = []
    real_verify = bundle_module.full_verify
    monkeypatch.setattr(bundle_module, "full_verify", lambda *a, **k: calls.append(a) or real_verify(*a, **k))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    before = sorted(os.listdir(tmp_path))
    cases = {
        str(tmp_path): "is a folder; give a file name",
        str(a_file / "b.tar"): f"{a_file} is a file, so the folder cannot be created",
        _unwritable(tmp_path): "cannot write in",
        str(isolated_env / "models" / "b.tar"): "is inside the cache",
    }
    for out, why in cases.items():
        code, stdout, err = run(capsys, "pack", SSD, "-o", out)
        assert code == 2 and stdout == "" and f"-o {out}: {why}" in one_line(err), (out, err)
    assert calls == [] and sorted(os.listdir(tmp_path)) == before
    assert assert_cache_whole(isolated_env) == [SSD]
    # a missing folder is made for the bundle, as for every other output
    code, _, err = run(capsys, "pack", SSD, "-o", str(tmp_path / "missing" / "b.tar"))
    assert code == 0 and (tmp_path / "missing" / "b.tar").is_file(), err


def test_interrupted_pack_leaves_no_half_bundle(zoo, tmp_path, monkeypatch):
    fetch(zoo[SSD].path)
    fetch(zoo[CENTERNET].path)
    out = tmp_path / "b.tar"
    pack(layout_for(), [SSD], out)
    previous = out.read_bytes()
    seen = []
    real_plain = bundle_module._plain

    def interrupted(info):
        seen.append(info.name)
        if len(seen) == 6:
            raise KeyboardInterrupt
        return real_plain(info)

    monkeypatch.setattr(bundle_module, "_plain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack(layout_for(), [SSD, CENTERNET], out)
    assert out.read_bytes() == previous and os.listdir(tmp_path) == ["b.tar"]
