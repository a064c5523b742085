"""The web portal for customers, hosts and operators (docs/portal.md)."""

from evroam.portal.app import create_portal, install_portal, random_secret_key

__all__ = ["create_portal", "install_portal", "random_secret_key"]
