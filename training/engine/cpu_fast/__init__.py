"""CPU-only speed paths: the hand-written GPT-2 trunk and decoder (`gpt2`) and the side-by-side
threads (`threads`)."""
