# Imports the package, which registers its blocks and backbones in the
# 'nonlocal_plugin' scope: type='nonlocal_plugin.NonLocal2D', ...
custom_imports = dict(
    imports=['nonlocal_plugin', 'nonlocal_plugin.backbones'],
    allow_failed_imports=False)
