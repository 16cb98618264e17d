"""One namespace class per endpoint group, exposed as attributes of ``PrismClient``."""

from .assets import Assets
from .characters import Characters
from .generations import Generations
from .templates import Templates
from .uploads import Uploads

__all__ = ["Assets", "Characters", "Generations", "Templates", "Uploads"]
