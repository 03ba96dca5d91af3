import unittest

from units import scale


class Test(unittest.TestCase):
    def test_scale(self):
        self.assertEqual(scale(3, 4), 12)
