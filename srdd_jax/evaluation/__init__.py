"""Sample-quality metrics: Inception features, FID, Inception Score, k-NN precision/recall."""
