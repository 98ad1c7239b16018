"""Bring your own model: networks trained elsewhere as physgen processes and fields.

``physgen.pretrained.load(PATH, device=None)`` reads, without running anything from the file:

* **EDM and PFGM++ snapshots** (NVlabs/edm, Karras et al. arXiv 2206.00364;
  Newbeeer/pfgmpp, Xu et al. arXiv 2302.04265): ``network-snapshot-*.pkl`` pickles and
  PFGM++'s ``training-state-*.pt`` (``torch.save`` of the same objects).  Their network
  classes pickle through EDM's ``torch_utils.persistence``, which embeds each class's
  module *source* and executes it on a normal load; :mod:`physgen.pretrained.reader`
  reads the records as data (class name, constructor arguments, parameters) with a
  restricted unpickler and refuses any other global, naming it.
  :mod:`physgen.pretrained.edm` maps the preconditioner to a process (``EDMPrecond`` ->
  ``edm``, with ``pfgmpp=True`` -> ``pfgmpp`` at the file's ``D``; ``VPPrecond`` -> ``vp``;
  ``VEPrecond`` -> ``ve``; ``iDDPMPrecond`` -> ``edm`` over its discrete levels) and the U-Net
  to physgen's: ``SongUNet`` as DDPM++ or NCSN++ (Song et al. arXiv 2011.13456) ->
  :class:`physgen.nets.unet.UNet`, ``DhariwalUNet`` (ADM, Dhariwal & Nichol arXiv
  2105.05233) -> :class:`physgen.nets.adm.ADMUNet`, tensor by tensor.
* **diffusers folders** (``UNet2DModel`` + ``scheduler_config.json``,
  :mod:`physgen.pretrained.diffusers`): a VP process with the scheduler's discrete betas
  and the network's prediction type; needs ``pip install "physgen[diffusers]"``.
* **physgen model folders** (``model.safetensors`` + ``model.header``, the checksummed physgen
  checkpoint header; :mod:`physgen.pretrained.convert`), written by ``physgen import`` of any of
  the above (an imported diffusers model still needs the diffusers extra to run).
* **physgen checkpoints and runs** (:func:`physgen.images.train.load_trained`).

It returns a :class:`Pretrained` with ``.process`` and ``.field`` (for
:func:`physgen.sampling.sample`, guidance and the likelihood, like physgen's own models)
and ``.denoise(x, sigma, labels=None)``, the original network's call in EDM's convention.
:func:`from_denoiser`, :func:`from_eps` and :func:`from_v` make fields of plain callables.
"""
from .callables import CallableField, from_denoiser, from_eps, from_v
from .load import FORMATS, Pretrained, detect_format, load
from .precond import PRECONDITIONINGS
from .reader import ALLOWED, Recorded, read_snapshot

__all__ = ["load", "Pretrained", "detect_format", "FORMATS", "from_denoiser", "from_eps", "from_v", "CallableField",
           "read_snapshot", "Recorded", "ALLOWED", "PRECONDITIONINGS"]
