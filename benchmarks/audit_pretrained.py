"""The bad-input audit's cases for models trained elsewhere (issue 21): ``physgen sample
--ckpt``, ``physgen import`` and ``physgen export`` with foreign files, by class of input.

* ``foreign missing``: a snapshot path that does not exist;
* ``foreign format``: a text file, an empty file, a truncated pickle, a zip that is not a
  snapshot, a folder that is neither a run nor a model (``.pkl``/``.pt``/folder);
* ``foreign crafted``: every payload of ``crafted_files.SNAPSHOT_PAYLOADS`` (``os.system``,
  ``eval``, ``exec``, ``subprocess``, in a ``.pt`` zip, nested, in a record's state), and a
  model folder whose header (checksum valid) names a class that is not a physgen network;
* ``foreign folder``: a model folder with damaged weights, a replaced weights checksum, no
  weights, a flipped header byte (its checksum), a header breaking the schema, a folder of
  the earlier format (``model.json`` only);
* ``diffusers folder`` (needs the diffusers extra: the setups write the folders with it):
  ``import`` and ``sample --ckpt`` of a tiny
  ``UNet2DModel`` folder with no ``config.json``, no ``scheduler_config.json``, a
  ``prediction_type`` or ``beta_schedule`` that is not supported, the weights of another
  network (wrong shapes), pickled ``.bin`` weights only; an imported diffusers folder whose
  header (checksum valid) names a bad ``prediction_type``, or whose header has a flipped byte;
* ``export format``: ``--format`` diffusers of a snapshot (no UNet2DModel layout), unknown, empty;
* ``foreign outputs``: ``--out`` of import / export holding another run's outputs, ``--out``
  onto the model itself;
* ``export run``: a physgen training run that cannot be exported: a run folder with an empty
  ``checkpoints/``, a damaged checkpoint file, a checkpoint whose EMA weights are gone;
* ``foreign legit``: sample / import / export on a tiny snapshot, export of a tiny training run,
  import of a tiny diffusers folder and ``export --format diffusers`` of the imported folder
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


def _header_edit(**changes):
    """Rewrite the folder's header with ``changes`` to its meta through the checkpoints writer
    (a valid checksum): what the reader's own checks must then catch."""
    def edit(m: Path) -> None:
        from physgen import checkpoints

        meta = checkpoints.read_header(m / "model.header").meta
        checkpoints.write(m / "model.header", {}, kind="model", step=0, meta={**meta, **changes})
    return edit


def _flip_header_byte(m: Path) -> None:
    data = bytearray((m / "model.header").read_bytes())
    at = data.index(b'"num_classes":') + len(b'"num_classes":')
    data[at] = ord("7")  # still valid JSON and schema: only the checksum can tell
    (m / "model.header").write_bytes(bytes(data))


def _earlier_format(m: Path) -> None:
    (m / "model.header").rename(m / "model.json")


def _unet2d(damage=None, name: str = "u", width: int = 8) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        from diffusers_folders import tiny_unet2d  # tests/helpers (on audit_cli's path)

        tiny_unet2d(w / name, width=width)
        if damage is not None:
            damage(w / name)
    return setup


def _scheduler(**changes):
    def edit(u: Path) -> None:
        import json

        cfg = json.loads((u / "scheduler_config.json").read_text())
        (u / "scheduler_config.json").write_text(json.dumps({**cfg, **changes}))
    return edit


def _other_weights(u: Path) -> None:
    import shutil

    _unet2d(name="wide", width=16)(u.parent)
    shutil.copy(u.parent / "wide" / "diffusion_pytorch_model.safetensors", u / "diffusion_pytorch_model.safetensors")


def _bin_only(u: Path) -> None:
    (u / "diffusion_pytorch_model.safetensors").rename(u / "diffusion_pytorch_model.bin")


def _imported_unet2d(edit=None) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        from physgen.cli.main import main

        _unet2d()(w)
        assert main(["import", str(w / "u"), "--out", str(w / "m")]) == 0
        if edit is not None:
            edit(w / "m")
    return setup


DIFFUSERS_DAMAGE = {  # label: (damage to the folder, what the one line must name)
    "no config": (lambda u: (u / "config.json").unlink(), ("config.json",)),
    "no scheduler": (lambda u: (u / "scheduler_config.json").unlink(), ("scheduler_config.json",)),
    "prediction_type": (_scheduler(prediction_type="noise"), ("'noise'",)),
    "beta_schedule": (_scheduler(beta_schedule="sigmoid"), ("'sigmoid'",)),
    "wrong shapes": (_other_weights, ("has shape",)),
    "pickled weights": (_bin_only, ("diffusion_pytorch_model.bin",)),
}


def _diffusers_cases() -> list[tuple]:
    out: list[tuple] = []
    for verb in (["import", "{W}/u", "--out", "{W}/m2"], SAMPLE + ["{W}/u"]):
        for label, (damage, needles) in DIFFUSERS_DAMAGE.items():
            out.append(("diffusers folder", verb, needles, {"setup": _unet2d(damage), "note": label}))
    tampered = {"header prediction_type": (_header_edit(preconditioning={"name": "diffusers", "prediction_type": "noise"}), ("'noise'",)),
                "header byte": (_flip_header_byte, ("checksum",))}
    for label, (edit, needles) in tampered.items():
        out.append(("diffusers folder", SAMPLE + ["{W}/m"], needles, {"setup": _imported_unet2d(edit), "note": label}))
    out += [("foreign legit", ["import", "{W}/u", "--out", "{W}/m2"], ("u",), {"setup": _unet2d(), "legit": True,
                                                                            "check": _written("m2/model.safetensors", "m2/model.header")}),
            ("foreign legit", ["export", "{W}/m", "--format", "diffusers", "--out", "{W}/d"], ("m",),
             {"setup": _imported_unet2d(), "legit": True, "check": _written("d/config.json", "d/scheduler_config.json")})]
    return out


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
                   "checksum": (_header_edit(weights_sha256="0" * 64), ("checksum",)),
                   "no weights": (lambda m: (m / "model.safetensors").unlink(), ("model.safetensors",)),
                   "class": (_header_edit(network={"class": "os.system"}), ("network class",)),
                   "header byte": (_flip_header_byte, ("checksum",)),
                   "header schema": (_header_edit(num_classes=-1), ("meta.num_classes",)),
                   "earlier format": (_earlier_format, ("model.json",))}
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
                                                                                      "check": _written("m2/model.safetensors", "m2/model.header")}),
            ("foreign legit", ["export", "{W}/m", "--out", "{W}/e"], ("m",), {"setup": _imported, "legit": True, "check": _written("e/model.header")})]
    out += [("export run", ["export", "{W}/run", "--out", "{W}/e"], ("run",), {"setup": lambda w: (w / "run" / "checkpoints").mkdir(parents=True)}),
            ("export run", ["export", "{W}/ckpt.pt", "--out", "{W}/e"], ("ckpt.pt",), {"setup": _write("ckpt.pt", b"PHYSGEN-CKPT\x00junk")}),
            ("export run", ["export", "{W}/run", "--out", "{W}/e"], ("ema",), {"setup": _without_ema, "note": "no EMA weights"}),
            ("foreign legit", ["export", "{W}/run", "--out", "{W}/e"], ("run",), {"setup": _trained, "legit": True,
                                                                                 "check": _written("e/model.header", "e/model.safetensors")})]
    return out + _diffusers_cases()
