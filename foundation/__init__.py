"""What several process roles load: seeding rules, logging set-up, the dataset
(generated or real) and the foundation language model's assets (tokenizer, tiny
pretrained checkpoint).

Roles never import each other's internals; anything two of them need lives here,
in `channel` (the symbol conventions and channel models), in `configs` (the config
schema) or in `protos` (the wire codec).
"""
