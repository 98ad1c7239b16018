"""Images, one module each (import from the module; the package re-exports nothing, so each
name has one home): offline datasets, sampler and PNG writers (:mod:`physgen.images.data`),
FID / KID / IS / SSIM (:mod:`physgen.images.metrics`), image training runs and
checkpoints (:mod:`physgen.images.train`), sharded per-sample-seeded generation
(:mod:`physgen.images.generate`), evaluation with Inception or any feature network
(:mod:`physgen.images.evaluate`) and a digit-classifier judge (:mod:`physgen.images.quality`)."""
