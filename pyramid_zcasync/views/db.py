"""Placeholder until its views land; registers nothing."""


def includeme(config):
    pass
