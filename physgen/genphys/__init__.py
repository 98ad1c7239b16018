"""GenPhys (Liu et al., arXiv 2304.02637): physical processes as generative models."""
