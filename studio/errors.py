"""The base of every error whose message is written for the person using Studio.

Such a message says what failed, on which file, and what to do next; the UI and the CLI show it
as it is. Anything else is a bug: it is logged in full and reported with its type.
"""


class UserError(Exception):
    pass
