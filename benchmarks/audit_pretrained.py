"""The bad-input audit's cases for models trained elsewhere (issue 21): ``physgen sample
--ckpt``, ``physgen import`` and ``physgen export`` with foreign files, by class of input.

* ``foreign missing``: a snapshot path that does not exist;
* ``foreign format``: a text file, an empty file, a truncated pickle, a zip that is not a
  snapshot, a folder that is neither a run nor a model (``.pkl``/``.pt``/folder);
* ``foreign crafted``: every payload of ``crafted_files.SNAPSHOT_PAYLOADS`` (``os.system``,
  ``eval``, ``exec``, ``subprocess``, in a ``.pt`` zip, nested, in a record's state), and a
  model folder whose ``model.json`` names a class that is not a physgen network;
* ``foreign folder``: a model folder with damaged weights, a replaced checksum, no weights;
* ``export format``: ``--format`` diffusers of a snapshot (no UNet2DModel layout), unknown, empty;
* ``foreign outputs``: ``--out`` of import / export holding another run's outputs, ``--out``
  onto the model itself;
* ``export run``: a physgen training run that cannot be exported: a run folder with an empty
  ``checkpoints/``, a damaged checkpoint file, a checkpoint whose EMA weights are gone;
* ``foreign legit``: sample / import / export on a tiny snapshot, export of a tiny training run
  (right = the outputs).

:func:`cases` returns ``(area, argv, needles, keywords)`` tuples for :class:`audit_cli.Case`
(``{W}`` is the case's folder, where each setup writes its files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["cases"]


def _snapshot(name: str = "s.pkl", kind: str = "edm") -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        import edm_snapshots  # tests/helpers (on audit_cli's path): EDM's record layout with physgen's own class text

        edm_snapshots.tiny(w / name, kind)
    return setup


def _imported(w: Path) -> None:
    from physgen.cli.main import main

    _snapshot()(w)
    assert main(["import", str(w / "s.pkl"), "--out", str(w / "m")]) == 0


TRAIN = ["train", "--process", "edm", "--dataset", "digits", "--resolution", "8", "--arch", "tiny", "--batch", "4",
         "--warmup-steps", "0", "--sample-n", "2", "--sample-steps", "2", "--precision", "fp32", "--steps", "1"]


def _trained(w: Path) -> None:
    from physgen.cli.main import main

    assert main(TRAIN + ["--out", str(w / "run")]) == 0


def _without_ema(w: Path) -> None:
    """A run whose one checkpoint was rewritten (valid checksum) without its ``ema`` weights."""
    from physgen import checkpoints

    _trained(w)
    found = checkpoints.find(w / "run")
    ckpt = checkpoints.read(found.path)
    payload = {k: v for k, v in ckpt.payload.items() if k != "ema"}
    checkpoints.write(found.path, payload, kind="train", step=ckpt.step, meta=found.header.meta)


def _then(*setups) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        for s in setups:
            s(w)
    return setup


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda w: (w / name).write_bytes(data)


def _edit_model(edit) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        _imported(w)
        edit(w / "m")
    return setup


def _json_edit(**changes):
    def edit(m: Path) -> None:
        import json

        desc = json.loads((m / "model.json").read_text())
        desc.update(changes)
        (m / "model.json").write_text(json.dumps(desc))
    return edit


def _crafted(maker) -> Callable[[Path], None]:
    return lambda w: maker(w / ("x.pt" if "zip" in maker.__name__ else "x.pkl"), w / "PAYLOAD-RAN")


def _written(*names) -> Callable[[Path], bool]:
    return lambda w: all((w / n).exists() for n in names)


SAMPLE = ["sample", "--n", "2", "--steps", "2", "--device", "cpu", "--out", "{W}/g.png", "--ckpt"]


def cases() -> list[tuple]:
    import crafted_files

    out: list[tuple] = []
    for verb in (SAMPLE, ["import", "--out", "{W}/m2"], ["export", "--out", "{W}/m2"]):
        def argv(path, verb=verb):
            return verb + [path] if verb[0] == "sample" else verb[:1] + [path] + verb[1:]
        out.append(("foreign missing", argv("{W}/none.pkl"), ("none.pkl",), {}))
        for name, data in (("t.pkl", b"not a pickle"), ("e.pt", b""), ("c.pkl", b"\x80\x04\x95"), ("z.pt", b"PK\x03\x04junk")):
            out.append(("foreign format", argv("{W}/" + name), (name,), {"setup": _write(name, data)}))
        out.append(("foreign format", argv("{W}/emptydir"), ("emptydir",), {"setup": lambda w: (w / "emptydir").mkdir()}))
        for label, (maker, global_name) in crafted_files.SNAPSHOT_PAYLOADS.items():
            path = "{W}/x.pt" if "zip" in maker.__name__ else "{W}/x.pkl"
            out.append(("foreign crafted", argv(path), (global_name,), {"setup": _crafted(maker), "note": label}))
        damaged = {"weights": (lambda m: (m / "model.safetensors").write_bytes(b"junk"), ("checksum",)),
                   "checksum": (_json_edit(weights_sha256="0" * 64), ("checksum",)),
                   "no weights": (lambda m: (m / "model.safetensors").unlink(), ("model.safetensors",)),
                   "class": (_json_edit(network={"class": "os.system"}), ("network class",))}
        for label, (edit, needles) in damaged.items():
            out.append(("foreign folder", argv("{W}/m"), needles, {"setup": _edit_model(edit), "note": label}))
    for fmt, needles in (("diffusers", ("diffusers",)), ("onnx", ("onnx",)), ("", ("--format",))):
        out.append(("export format", ["export", "{W}/m", "--format", fmt, "--out", "{W}/e"], needles, {"setup": _imported}))
    out += [("foreign outputs", ["import", "{W}/s.pkl", "--out", "{W}/m"], ("--overwrite",), {"setup": _imported}),
            ("foreign outputs", ["export", "{W}/m", "--out", "{W}/m"], ("model itself",), {"setup": _imported}),
            ("foreign outputs", ["export", "{W}/m", "--out", "{W}/FILE/sub"], ("FILE",),
             {"setup": _then(_imported, _write("FILE", b"x"))})]
    out += [("foreign legit", SAMPLE + ["{W}/s.pkl"], ("s.pkl",), {"setup": _snapshot(), "legit": True, "check": _written("g.png", "sampling.json")}),
            ("foreign legit", SAMPLE + ["{W}/s.pt"], ("s.pt",), {"setup": _snapshot("s.pt", "pfgmpp"), "legit": True, "check": _written("g.png")}),
            ("foreign legit", ["import", "{W}/s.pkl", "--out", "{W}/m2"], ("s.pkl",), {"setup": _snapshot(), "legit": True,
                                                                                      "check": _written("m2/model.safetensors", "m2/model.json")}),
            ("foreign legit", ["export", "{W}/m", "--out", "{W}/e"], ("m",), {"setup": _imported, "legit": True, "check": _written("e/model.json")})]
    out += [("export run", ["export", "{W}/run", "--out", "{W}/e"], ("run",), {"setup": lambda w: (w / "run" / "checkpoints").mkdir(parents=True)}),
            ("export run", ["export", "{W}/ckpt.pt", "--out", "{W}/e"], ("ckpt.pt",), {"setup": _write("ckpt.pt", b"PHYSGEN-CKPT\x00junk")}),
            ("export run", ["export", "{W}/run", "--out", "{W}/e"], ("ema",), {"setup": _without_ema, "note": "no EMA weights"}),
            ("foreign legit", ["export", "{W}/run", "--out", "{W}/e"], ("run",), {"setup": _trained, "legit": True,
                                                                                 "check": _written("e/model.json", "e/model.safetensors")})]
    return out
