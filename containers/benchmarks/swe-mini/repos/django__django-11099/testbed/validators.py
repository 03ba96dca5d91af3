import re

USERNAME = re.compile(r"^[\w.@+-]+$")


def valid_username(name):
    return bool(USERNAME.match(name))
