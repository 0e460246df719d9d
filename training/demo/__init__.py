"""The synthetic world of the demo and the benches: task suites of instruction families with a
gold judge (suites.py: "demo", the families the loop is tuned on, and "errands", never tuned on), a
simulated crowd of labelers, and the offline tiny base model. Plain Python; no Django."""
