"""The generation core. Import generation.types for the protocol; engines load torch lazily."""
