"""Helpers the tests share, imported as modules (``from tests.support import fakes``)."""
