"""LoRA in the NTK regime (Jang, Lee, Ryu, ICML 2024; MATH.md §7): the linearised problem (:mod:`.spec`), the
LoRA objective with exact derivatives and the certificate (:mod:`.landscape`), the convex nuclear-norm
reference (:mod:`.convex`), the optimisers and the landscape study (:mod:`.optimise`), and explicit spurious
minima verified exactly (:mod:`.examples`)."""
