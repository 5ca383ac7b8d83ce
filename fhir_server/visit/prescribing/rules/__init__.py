"""The prescribing rules, one module each; importing this package registers them all."""

from . import contraindication, controlled, encounter, evaluation, licence, red_flags

MODULES = (encounter, licence, controlled, red_flags, evaluation, contraindication)
