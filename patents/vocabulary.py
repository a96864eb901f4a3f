"""The words stored in rows and taken in URLs, written once. Choices classes (Patent.Origin,
GenerationJob.Mode) and validators build on these; nothing else spells them out."""

TOP_DOWN = "top-down"  # title, abstract, claims
BOTTOM_UP = "bottom-up"  # claims, abstract, title
MODES = (TOP_DOWN, BOTTOM_UP)

GENERATED = "generated"
REFERENCE = "reference"
ORIGINS = (GENERATED, REFERENCE)
ORIGIN_ALL = "all"  # a search filter value, not an origin
