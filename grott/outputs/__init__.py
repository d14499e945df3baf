"""
The built-in outputs: each is a plugin factory (L{IConfigurablePlugin})
registered by the dropin in L{grott.plugins} and configured under
C{outputs:} in config.yaml.
"""
