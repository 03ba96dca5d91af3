import unittest

from symbols import Symbol


class Test(unittest.TestCase):
    def test_no_dict(self):
        self.assertFalse(hasattr(Symbol("x"), "__dict__"))
