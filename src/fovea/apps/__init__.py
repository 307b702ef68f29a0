"""Applications built on trained models: style transfer, DeepDream, retrieval, explanations and
adversarial examples."""
