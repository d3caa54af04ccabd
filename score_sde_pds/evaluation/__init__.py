"""Sample-quality evaluation: the FID Inception-v3 network and the metrics built on it."""
