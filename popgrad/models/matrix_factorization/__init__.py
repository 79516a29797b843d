"""LoRA gradient flow in matrix factorization (Xu, Min, MacDonald, Luo, Tarmoun, Mallada, Vidal, AISTATS
2025; MATH.md §6): the problem (:mod:`.spec`), initialisations, gradient flow and gradient descent with their
observables (:mod:`.flow`), and the paper's theory as checks (:mod:`.theory`)."""
