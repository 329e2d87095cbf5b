"""Patient phenotypes: named sets of parameter values on top of the registry defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Phenotype", "PHENOTYPES", "get_phenotype"]


@dataclass(frozen=True)
class Phenotype:
    name: str
    meaning: str
    scale: dict[str, float] = field(default_factory=dict)  # multiply the default
    set: dict[str, float] = field(default_factory=dict)  # replace the default


PHENOTYPES: dict[str, Phenotype] = {
    p.name: p
    for p in (
        Phenotype("eugonadal", "healthy adult man"),
        Phenotype(
            "mild_secondary_hypogonadism",
            "functional (metabolic) secondary hypogonadism: weak GnRH drive, T 200-250 ng/dL "
            "with LH about 4 IU/L (Shabsigh 2005; Taylor & Levine 2010)",
            # weak GnRH drive and reduced Leydig responsiveness to LH (obesity lowers LH
            # pulse amplitude and bioactivity: Vermeulen 1993; Pitteloud 2005); with the
            # metabolic index, aromatization is raised (Schneider 1979), so E2 carries more
            # of the feedback and an ERalpha blocker lifts LH more
            scale={"hypothalamus.pulse_mass_max": 0.45, "leydig.lhr_kd": 3.0,
                   "leydig.t_secretion": 1.65},
            set={"patient.metabolic_index": 0.6},
        ),
        Phenotype(
            "idiopathic_oligozoospermia",
            "primary germinal impairment with normal androgens: sperm median about 12-14 "
            "M/mL (10-90 %: about 6-30); FSH only slightly raised in pulsehpg "
            "(docs/validation.md)",
            set={"patient.testis_function": 0.18},
        ),
        Phenotype(
            "chh",
            "congenital hypogonadotropic hypogonadism: no endogenous GnRH",
            set={"hypothalamus.gnrh_present": 0.0},
        ),
        Phenotype("agonadal", "after bilateral orchiectomy", set={"testis.present": 0.0}),
    )
}


def get_phenotype(name: str) -> Phenotype:
    try:
        return PHENOTYPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"phenotype: unknown value {name!r}; allowed: {', '.join(PHENOTYPES)}") from None
