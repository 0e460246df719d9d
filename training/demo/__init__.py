"""The synthetic world of the demo and the benches: instruction families with a gold judge, a
simulated crowd of labelers, and the offline tiny base model. Plain Python; no Django."""
