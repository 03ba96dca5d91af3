import unittest

from validators import valid_username


class Test(unittest.TestCase):
    def test_no_trailing_newline(self):
        self.assertFalse(valid_username("joe\n"))
        self.assertTrue(valid_username("joe"))
