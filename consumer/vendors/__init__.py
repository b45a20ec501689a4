"""The five vendors, one module each, behind ``VendorClient`` (see ``base``)."""

from __future__ import annotations

from consumer.vendors.autodesk import AutodeskClient
from consumer.vendors.base import VendorClient
from consumer.vendors.enos import EnosClient
from consumer.vendors.lexful import LexfulClient
from consumer.vendors.trelica import TrelicaClient
from consumer.vendors.webflow import WebflowClient

VENDORS: dict[str, type[VendorClient]] = {
    cls.name: cls
    for cls in (LexfulClient, WebflowClient, AutodeskClient, TrelicaClient, EnosClient)
}

__all__ = ["VENDORS", "VendorClient"]
