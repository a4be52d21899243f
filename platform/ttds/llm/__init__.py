"""The LLM side of TTDS: the backbone (`backbone`), its text tokenizer, and SmolLM2 access.

Deliberately imports nothing: `import ttds.llm.prompts` (plain text templates) should not
pay for importing transformers and peft. Import from the submodules, e.g.
`from ttds.llm.backbone import BackboneConfig, load_backbone`.
"""
