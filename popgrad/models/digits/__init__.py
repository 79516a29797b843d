"""A small real network on real data for the LoRA theories (issue 24): the 8x8 handwritten digits that ship
with scikit-learn (:mod:`.data`), a multilayer perceptron pre-trained on some digits and cached
(:mod:`.network`), LoRA and full fine-tuning on a shifted task with the alignment observables of Xu et al.
(:mod:`.lora`), and the network's exact Jacobian for the linearised (NTK) problem of Jang, Lee & Ryu
(:mod:`.jacobian`)."""
