"""The stages of `tunewise run`: prepare data, evaluate the base model, train, evaluate the fine-tune, write results."""
