"""The papers' figures, tables and theorem scalings as data and criteria (``popgrad reproduce``).

Importing the package registers every reproduction (:data:`.base.REGISTRY`)."""

from . import committee, dayi_chen, figures, jlr, jlr_digits, questions, scalings, transition, xu, xu_digits  # noqa: F401  (register their reproductions)
