"""The training engine: torch + transformers only, no Django, nothing of `training` outside it.

One module per stage (`sft`, `reward`, `ppo`, `sample`, `dpo`), each with a `run(cfg, data, *,
on_progress)` and its config class as `Config`. This package itself imports nothing, so the web
process can import `training.engine.config` without loading torch.
"""
