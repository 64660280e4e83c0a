"""distillguard: catch coordinated distillation rings on LLM APIs."""

__version__ = "0.1.0"
