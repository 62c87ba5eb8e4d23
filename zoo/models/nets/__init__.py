"""Classification networks that feature extractors of more than one meta-architecture build on."""
