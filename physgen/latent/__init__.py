"""Latent space (LDM, arXiv 2112.10752): train a KL autoencoder (:mod:`.train`), encode a
dataset to a latents file that ``npz:`` data loading reads, decode latents back to images
(:mod:`.encode`)."""
