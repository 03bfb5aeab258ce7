"""Models: the instance encoder (BERT over tags and regions), the bag heads and the CLEVER model."""
