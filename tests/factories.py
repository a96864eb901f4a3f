import factory

from generation.models import Generator
from patents.services import patent_publish


class GeneratorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Generator
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"gen-{n}")
    model_id = factory.LazyAttribute(lambda o: f"test/{o.name}")
    backend = Generator.Backend.TRANSFORMERS
    prompt_format = Generator.PromptFormat.KL3M


def patent_published(**overrides):
    """A generated invention published through the real service."""
    n = overrides.pop("n", 1)
    data = {
        "title": f"Self-cleaning widget {n}",
        "abstract": f"A widget number {n} that cleans itself with a rotating brush driven by "
        "the widget's own motor.",
        "claims": [
            {"number": 1, "text": f"A widget {n} comprising a motor and a rotating brush."},
            {"number": 2, "text": "The widget of claim 1, wherein the brush is nylon."},
        ],
        "provenance": {"generator_model": "test/model", "mode": "top-down", "seed": n},
    }
    data.update(overrides)
    return patent_publish(**data)
