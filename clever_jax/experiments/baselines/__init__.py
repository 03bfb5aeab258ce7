"""Table 1 baselines that read no images: RTP (captions)."""
