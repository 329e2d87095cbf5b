"""The parameter registry: the single source of truth for every model parameter.

Each entry has a dotted name (what users write in configs and overrides), a short
symbol (what the equations in :mod:`pulsehpg.model` use), a unit, a default, the
allowed range, a one-line meaning, the source of its value and, where patients
differ, the coefficient of variation of a log-normal between-patient multiplier.

Values are stored in the units a paper reports them in ("min", "day", ...);
:func:`to_core_units` converts them to the core's hours.

Sources marked "calibrated: Sx" were fitted so that the model reproduces
scenario Sx of the validation set (docs/validation.md); "assumed" marks a
value with no direct human measurement, chosen to be physiologically plausible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Param", "REGISTRY", "BY_NAME", "BY_SYMBOL", "to_core_units", "lookup"]

# Factor that converts a value in the given unit to the core's units (hours for time).
_TIME_FACTORS = {"min": 1.0 / 60.0, "h": 1.0, "day": 24.0, "week": 168.0}


@dataclass(frozen=True)
class Param:
    name: str  # dotted, user-facing: "pituitary.gnrhr_kd"
    sym: str  # identifier used in the model equations
    default: float
    unit: str
    lower: float
    upper: float
    meaning: str
    source: str
    cv: float = 0.0  # between-patient log-normal CV (0: same in every patient)
    structural: bool = False  # compiled into the core as a constant (exponents)

    @property
    def core_factor(self) -> float:
        u = self.unit
        if u in _TIME_FACTORS:
            return _TIME_FACTORS[u]
        if u.startswith("1/") and u[2:] in _TIME_FACTORS:
            return 1.0 / _TIME_FACTORS[u[2:]]
        return 1.0


def to_core_units(param: Param, value):
    """Convert a value in the registry's unit to the core's unit."""
    return value * param.core_factor


LN2 = math.log(2.0)


def _p(name, sym, default, unit, lower, upper, meaning, source, cv=0.0, structural=False):
    return Param(name, sym, float(default), unit, float(lower), float(upper), meaning,
                 source, float(cv), structural)


REGISTRY: tuple[Param, ...] = (
    # --- Hypothalamic GnRH pulse generator ---------------------------------------
    _p("hypothalamus.gnrh_present", "gnrh_on", 1, "1", 0, 1,
       "1 if the GnRH pulse generator works, 0 in congenital hypogonadotropic hypogonadism",
       "phenotype switch"),
    _p("hypothalamus.interval_min", "I_min", 34.0, "min", 10, 120,
       "interpulse interval with no sex-steroid feedback",
       "DETECT 1990 (castration multiplies LH pulse frequency 2.7-fold)", cv=0.10),
    _p("hypothalamus.interval_gain", "I_gain", 1.8, "1", 0, 20,
       "lengthening of the interval per unit of steroid feedback (95 min at baseline)",
       "Veldhuis 1987 JCEM 65:929 (95 min in normal men)", cv=0.15),
    _p("hypothalamus.interval_shape", "I_shape", 20, "1", 1, 400,
       "gamma shape of interpulse intervals (CV = 1/sqrt(shape))",
       "Veldhuis 1987 (intra-individual CV about 10-25 %)"),
    _p("hypothalamus.pulse_mass_max", "M_max", 120, "pg/mL", 0, 2000,
       "portal GnRH increment of a pulse with no steroid feedback",
       "calibrated: S4, S5", cv=0.20),
    _p("hypothalamus.pulse_mass_gain", "M_gain", 2.0, "1", 0, 50,
       "reduction of pulse mass per unit of steroid feedback",
       "calibrated: S5, S8", cv=0.4),
    _p("hypothalamus.pulse_mass_hill", "M_hill", 3, "1", 1, 4,
       "steepness of feedback on pulse mass", "calibrated: S8", structural=True),
    _p("hypothalamus.pulse_mass_cv", "M_cv", 0.5, "1", 0, 2,
       "pulse-to-pulse CV of GnRH pulse mass (log-normal)",
       "Veldhuis 1987 (LH pulse amplitudes vary 2-3 fold)"),
    _p("hypothalamus.feedback_e2_weight", "w_E", 0.75, "1", 0, 1,
       "share of hypothalamic steroid feedback carried by estradiol via ERalpha",
       "calibrated: S12, S13 (the LH rise on a SERM); site: Hayes 2000 JCEM 85:3027 "
       "(E2 feedback at the hypothalamus)"),
    _p("hypothalamus.feedback_sensitivity", "fb_sens", 1.0, "1", 0.05, 20,
       "multiplier on the strength of steroid feedback", "assumed", cv=0.15),
    _p("hypothalamus.metabolic_mass_effect", "met_mass", 0.5, "1", 0, 1,
       "fractional pulse-mass loss at metabolic index 1 (insulin resistance, inflammation)",
       "assumed (direction: Pitteloud 2005 JCEM)"),
    _p("hypothalamus.metabolic_interval_effect", "met_int", 0.3, "1", 0, 3,
       "fractional interval lengthening at metabolic index 1", "assumed"),
    # --- Portal GnRH and gonadorelin ----------------------------------------------
    _p("gnrh.half_life", "t_gnrh", 6.0, "min", 1, 30,
       "half-life of endogenous GnRH in portal/plasma", "JCEM 1977;44:356 (5.5-8 min)"),
    _p("gonadorelin.half_life", "t_gon", 4.0, "min", 1, 30,
       "plasma half-life of gonadorelin", "gonadorelin SmPC (iv about 4 min)"),
    _p("gonadorelin.absorption_half_life", "t_gon_abs", 24.0, "min", 2, 240,
       "subcutaneous absorption half-life of gonadorelin", "Hurley 1987 JCEM"),
    _p("gonadorelin.bioavailability_sc", "F_gon", 0.875, "1", 0, 1,
       "subcutaneous bioavailability of gonadorelin", "Hurley 1987 JCEM (87.5 %)"),
    _p("gonadorelin.volume", "V_gon", 12.0, "L", 1, 100,
       "distribution volume of gonadorelin", "gonadorelin SmPC (about 0.15-0.2 L/kg)"),
    # --- Pituitary gonadotroph ----------------------------------------------------
    _p("pituitary.gnrhr_kd", "Kd_G", 15.0, "pg/mL", 0.1, 1000,
       "GnRH concentration at half-maximal receptor occupancy", "calibrated: S1, S4"),
    _p("pituitary.gnrhr_desens_rate", "k_des", 0.8, "1/h", 0, 10,
       "desensitization rate of occupied GnRH receptors", "calibrated: S1 (Belchetz 1978)"),
    _p("pituitary.gnrhr_recovery_rate", "k_rec", 3.0, "1/h", 0.001, 10,
       "resensitization rate of free GnRH receptors", "calibrated: S1 (Belchetz 1978)"),
    _p("pituitary.signal_tau", "tau_s", 3.0, "h", 0.1, 48,
       "time constant of the integrated GnRH signal that drives synthesis",
       "assumed (gonadotropin subunit mRNA responds within hours)"),
    _p("pituitary.lh_synthesis", "sig_L", 58.0, "IU/L/h", 0, 100,
       "maximal LH synthesis (serum-equivalent units)", "calibrated: S4", cv=0.20),
    _p("pituitary.lh_synthesis_basal", "b_L", 0.02, "1", 0, 1,
       "GnRH-independent fraction of LH synthesis", "calibrated: CHH LH < 1 IU/L"),
    _p("pituitary.lh_synthesis_k", "K_sL", 0.15, "1", 1e-4, 1,
       "integrated GnRH signal giving half-maximal LH synthesis", "calibrated: S1, S4"),
    _p("pituitary.lh_release_rate", "k_relL", 2.0, "1/h", 0, 10,
       "release rate of the LH pool per unit GnRH receptor signal", "calibrated: S4"),
    _p("pituitary.lh_pool_turnover", "k_degL", 0.04, "1/h", 0, 10,
       "intracellular degradation of stored LH",
       "assumed (pituitary LH stores turn over in days)"),
    _p("pituitary.e2_sensitivity", "aE_P", 0.75, "1", 0, 20,
       "reduction of gonadotroph responsiveness per unit of E2 (relative to reference)",
       "calibrated: S8, S12", cv=0.3),
    _p("pituitary.t_sensitivity", "aT_P", 0.25, "1", 0, 20,
       "reduction of gonadotroph responsiveness per unit of T (relative to reference)",
       "calibrated: S8", cv=0.3),
    _p("pituitary.fsh_synthesis", "sig_F", 6.0, "IU/L/h", 0, 100,
       "maximal FSH synthesis (serum-equivalent units)", "calibrated: S4", cv=0.25),
    _p("pituitary.fsh_synthesis_basal", "b_F", 0.0125, "1", 0, 1,
       "GnRH-independent fraction of FSH synthesis", "calibrated: CHH FSH < 1 IU/L"),
    _p("pituitary.fsh_synthesis_k", "K_sF", 0.05, "1", 1e-4, 1,
       "integrated GnRH signal giving half-maximal FSH synthesis",
       "calibrated: S4; near the normal signal, so that FSH rises with LH on a SERM "
       "(Chua 2013: +4.2 IU/L), not with its square"),
    _p("pituitary.fsh_frequency_k", "z_F", 2.0, "1/h", 0.01, 10,
       "pulse frequency above which FSH synthesis is halved (FSH favours slow pulses)",
       "assumed (Dalkin 1989; Burger 2004: FSHb favoured by slow GnRH pulses)"),
    _p("pituitary.fsh_constitutive_release", "k_cF", 0.25, "1/h", 0, 5,
       "constitutive (unregulated) release rate of the FSH pool",
       "assumed (FSH is mostly secreted constitutively)"),
    _p("pituitary.fsh_release_rate", "k_relF", 0.5, "1/h", 0, 10,
       "GnRH-driven release rate of the FSH pool", "calibrated: S1"),
    _p("pituitary.fsh_pool_turnover", "k_degF", 0.05, "1/h", 0, 10,
       "intracellular degradation of stored FSH", "assumed"),
    _p("pituitary.inhibin_sensitivity", "aI_F", 0.5, "1", 0, 20,
       "reduction of FSH synthesis per unit of inhibin B (relative to reference)",
       "calibrated: S13 (the FSH rise on a SERM); FSH hardly rises with germinal "
       "failure (docs/validation.md)"),
    _p("pituitary.frequency_tau", "tau_z", 6.0, "h", 0.5, 48,
       "averaging time of the gonadotroph's pulse-frequency sensing", "assumed"),
    # --- Serum gonadotropins -------------------------------------------------------
    _p("lh.half_life_fast", "t_LHa", 18.0, "min", 2, 120,
       "fast half-life of serum LH", "Keenan, Veldhuis & Yang 1998 (7-40 min)"),
    _p("lh.half_life_slow", "t_LHb", 140.0, "min", 30, 600,
       "slow half-life of serum LH", "Wide 2022 JCEM (125-164 min)"),
    _p("lh.fast_fraction", "f_LHa", 0.9, "1", 0, 1,
       "fraction of released LH cleared by the fast component",
       "Keenan, Veldhuis & Yang 1998"),
    _p("fsh.half_life", "t_FSH", 274.0, "min", 30, 2000,
       "half-life of serum FSH", "Urban & Veldhuis 1991 JCEM (274 +/- 45 min)"),
    # --- Leydig cells -----------------------------------------------------------------
    _p("leydig.lhr_kd", "Kd_L", 6.0, "IU/L", 0.01, 1000,
       "LH(-equivalent) concentration at half-maximal LH receptor occupancy",
       "calibrated: S4, S12", cv=0.20),
    _p("leydig.hcg_potency", "pot_hcg", 0.095, "1", 0, 10,
       "LH-equivalents per IU/L of serum hCG at the LH receptor", "calibrated: S7 (Coviello 2005)"),
    _p("leydig.lhr_down_rate", "k_downL", 0.05, "1/h", 0, 5,
       "occupancy-driven LH receptor down-regulation rate at full occupancy",
       "calibrated: high-dose hCG desensitization (Padron 1980; assumed)"),
    _p("leydig.lhr_recovery", "t_recL", 24.0, "h", 1, 1000,
       "time constant of LH receptor replenishment", "assumed (Leydig LHR recovers over days)"),
    _p("leydig.steroidogenic_tau", "tau_st", 25.0, "min", 1, 600,
       "lag of steroidogenesis behind LH receptor signal",
       "Veldhuis (T follows LH pulses by 30-60 min)"),
    _p("leydig.capacity_tau", "tau_cap", 30.0, "day", 1, 1000,
       "time constant of Leydig trophic capacity (atrophy without LH, regrowth)",
       "assumed (Leydig recovery after TRT takes months)", cv=0.30),
    _p("leydig.capacity_k", "K_cap", 0.15, "1", 1e-3, 10,
       "LH receptor signal giving half-maximal trophic drive", "calibrated: S10"),
    _p("leydig.capacity_basal", "b_cap", 0.15, "1", 0, 1,
       "trophic capacity retained without LH", "calibrated: S9, S10"),
    _p("leydig.t_secretion", "T_sec", 9000.0, "nmol/L/h", 0, 100000,
       "maximal intratesticular T production", "calibrated: Coviello 2005 ITT about 1200 nmol/L",
       cv=0.20),
    _p("leydig.response_k", "K_st", 0.35, "1", 1e-3, 10,
       "LH receptor signal giving half-maximal steroidogenesis", "calibrated: S12"),
    _p("testis.present", "testis_on", 1, "1", 0, 1,
       "1 with testes, 0 after orchiectomy", "phenotype switch (S5)"),
    _p("testis.itt_half_life", "t_itt", 15.0, "min", 1, 600,
       "half-life of intratesticular T exchange with blood", "assumed"),
    _p("testis.itt_serum_partition", "rho", 1.0, "1", 0, 10,
       "ITT/serum T ratio reached without testicular production",
       "calibrated: S7 (ITT 6 % of baseline on TE 200 mg weekly)"),
    _p("testis.volume_ratio", "vr", 0.00779, "1", 0, 1,
       "testicular T outflow volume relative to serum T volume",
       "calibrated: Saez 1972 T production; serum T about 1.5 % of ITT (Coviello 2005)"),
    # --- Steroids -------------------------------------------------------------------------
    _p("steroid.t_volume", "V_T", 28.6, "L", 1, 1000,
       "distribution volume of testosterone (MCR 950 L/day x half-life / ln 2)", "Saez 1972 JCI (MCR about 950 L/day)"),
    _p("steroid.t_half_life", "t_T", 30.0, "min", 5, 600,
       "half-life of serum testosterone", "Saez 1972 JCI (MCR 950 L/day with V_T)"),
    _p("steroid.t_reference", "T_ref", 18.4, "nmol/L", 0.1, 200,
       "serum T at which feedback terms equal 1", "Travison 2017 (median 531 ng/dL)"),
    _p("steroid.e2_reference", "E2_ref", 22.0, "pg/mL", 0.1, 500,
       "serum E2 at which feedback terms equal 1", "Verdonk 2019 (LC-MS/MS reference)"),
    _p("steroid.aromatization", "k_ar", 0.66, "pg/mL per nmol/L per h", 0, 100,
       "peripheral aromatization of serum T to E2", "Longcope; Vermeulen 2002 (0.3-0.4 %)",
       cv=0.25),
    _p("steroid.testicular_e2_fraction", "f_E2t", 0.2, "1", 0, 0.9,
       "share of E2 secreted by the testis at baseline", "Vermeulen 2002 (80 % peripheral)"),
    _p("steroid.metabolic_aromatase_effect", "met_ar", 2.0, "1", 0, 5,
       "fractional rise of aromatization at metabolic index 1 (adiposity)",
       "Schneider 1979 JCEM 48:633 (E2 production about doubled in obese men); Vermeulen 2002"),
    _p("steroid.e2_half_life", "t_E2", 60.0, "min", 5, 600,
       "half-life of serum estradiol", "Longcope (E2 MCR about 1350 L/day)"),
    _p("steroid.shbg", "SHBG", 35.0, "nmol/L", 1, 300,
       "serum SHBG at age 40", "Feldman 2002 MMAS", cv=0.35),
    _p("steroid.shbg_age_slope", "shbg_age", 0.013, "1/year", 0, 0.1,
       "fractional SHBG rise per year of age after 40", "Feldman 2002 MMAS (+1.3 %/year)"),
    _p("steroid.albumin", "Alb", 43.0, "g/L", 10, 80,
       "serum albumin", "Vermeulen 1999 JCEM (free T calculation)"),
    _p("steroid.shbg_affinity", "Ka_shbg", 1.0e9, "L/mol", 1e6, 1e12,
       "association constant of T for SHBG", "Vermeulen 1999 JCEM"),
    _p("steroid.albumin_affinity", "Ka_alb", 3.6e4, "L/mol", 1e2, 1e7,
       "association constant of T for albumin", "Vermeulen 1999 JCEM"),
    _p("steroid.age_t_slope", "t_age", 0.004, "1/year", 0, 0.05,
       "fractional fall of Leydig capacity per year of age after 40",
       "Feldman 2002 MMAS (serum total T -0.4 %/year; on Leydig capacity LH makes up "
       "half of it: docs/validation.md)"),
    # --- Sertoli cells, inhibin B, spermatogenesis ----------------------------------
    _p("sertoli.tau", "tau_ser", 7.0, "day", 0.1, 100,
       "time constant of Sertoli function", "assumed (FSH-driven Sertoli changes over days)"),
    _p("sertoli.fsh_k", "K_serF", 1.0, "IU/L", 0.01, 100,
       "FSH giving half-maximal Sertoli stimulation", "calibrated: S8, S10"),
    _p("sertoli.itt_k", "K_serT", 60.0, "nmol/L", 1, 5000,
       "ITT giving half-maximal Sertoli androgen support", "calibrated: S7, S8"),
    _p("sertoli.basal", "b_ser", 0.1, "1", 0, 1,
       "Sertoli function retained without androgen", "calibrated: S8"),
    _p("sertoli.fsh_independent", "b_serF", 0.1, "1", 0, 1,
       "Sertoli function retained without FSH (androgen alone supports spermatogenesis)",
       "assumed equal to sertoli.basal (S10 calibration pending)"),
    _p("inhibin.half_life", "t_inh", 4.5, "h", 0.1, 100,
       "half-life of serum inhibin B", "assumed"),
    _p("inhibin.production", "k_inh", 45.0, "pg/mL/h", 0, 10000,
       "maximal inhibin B production", "calibrated: inhibin B 80-350 pg/mL (Anawalt 1996)",
       cv=0.25),
    _p("inhibin.reference", "Inh_ref", 170.0, "pg/mL", 1, 2000,
       "inhibin B at which the FSH feedback term equals 1", "Anawalt 1996 JCEM"),
    _p("inhibin.germcell_share", "f_inhg", 0.6, "1", 0, 1,
       "share of inhibin B production that needs early germ cells",
       "Anawalt 1996 JCEM (inhibin B falls with germ cell loss)"),
    _p("spermatogonia.tau", "tau_ssc", 18.0, "day", 0.5, 1000,
       "e-folding time of spermatogonial self-renewal (regrowth after depletion)",
       "calibrated: S9 recovery curve (Liu 2006)", cv=5.0),
    _p("spermatogonia.age_slope", "ssc_age", 0.01, "1/year", 0, 0.1,
       "fractional slowing of spermatogonial recovery per year of age after 35",
       "assumed (Kohn 2017: slower recovery with age)"),
    _p("spermatogonia.sertoli_k", "K_ssc", 1.0, "1", 1e-3, 10,
       "Sertoli function giving half-maximal spermatogonial activity", "calibrated: S9"),
    _p("spermatogonia.basal", "b_ssc", 0.01, "1", 0, 1,
       "spermatogonial activity retained without Sertoli support", "calibrated: S9", cv=1.0),
    _p("sperm.androgen_tau", "tau_A", 72.0, "h", 0.1, 500,
       "averaging time of tubular androgen action (androgen-binding protein, AR signalling)",
       "assumed (germ cells respond to ITT over hours to days)"),
    _p("sperm.entry_itt_k", "K_eT", 100.0, "nmol/L", 1, 5000,
       "ITT giving half-maximal germ-cell entry (meiotic progression)",
       "calibrated: S7, S8 (spermatogenesis needs ITT well above serum T)", cv=0.3),
    _p("sperm.duration", "dur_spg", 64.0, "day", 20, 150,
       "mean duration of spermatogenesis, entry to spermiation",
       "Heller & Clermont 1964; Misell 2006 J Urol (heavy water 42-76 days)", cv=0.08),
    _p("sperm.epididymal_transit", "dur_epi", 10.0, "day", 1, 40,
       "mean epididymal transit", "Amann 1981; classic 74 days with transit", cv=0.2),
    _p("sperm.death_rate", "d_max", 1.5, "1/day", 0, 10,
       "apoptosis rate of hormone-dependent germ cells (spermatocytes, spermatids) "
       "without androgen support", "calibrated: S8 (time to < 3 M/mL)", cv=0.3),
    _p("sperm.survival_itt_k", "K_dT", 200.0, "nmol/L", 1, 5000,
       "ITT at which germ-cell survival is half-maximal", "calibrated: S8", cv=0.3),
    _p("sperm.concentration_scale", "c_sp", 225.0, "M/mL", 0, 1000,
       "sperm concentration at full spermatogenic output",
       "WHO 2010 reference (median 50-70 M/mL)"),
    _p("sperm.motility_max", "mot_max", 81.0, "%", 0, 100,
       "total motility with full androgen and FSH support", "WHO 2010 (median 61 %)"),
    _p("sperm.motility_itt_k", "K_mT", 100.0, "nmol/L", 1, 5000,
       "ITT giving half-maximal epididymal maturation of motility", "assumed"),
    _p("sperm.motility_fsh_k", "K_mF", 4.0, "IU/L", 0.01, 100,
       "FSH giving half-maximal FSH contribution to motility", "calibrated: S13"),
    _p("sperm.motility_fsh_share", "f_mF", 0.4, "1", 0, 1,
       "share of motility that depends on FSH support", "calibrated: S13"),
    # --- Covariates -------------------------------------------------------------------------
    _p("patient.age", "age", 35.0, "year", 18, 90, "age", "covariate"),
    _p("patient.testis_function", "tf", 1.0, "1", 0, 5,
       "baseline testicular (germinal) function multiplier", "covariate", cv=0.6),
    _p("patient.metabolic_index", "met", 0.0, "1", 0, 1,
       "metabolic state: 0 healthy, 1 severe insulin resistance / inflammation", "covariate"),
    # --- Drugs ----------------------------------------------------------------------------
    _p("testosterone_enanthate.release_half_life", "t_TE", 4.5, "day", 0.1, 100,
       "release half-life of T from the enanthate depot", "Behre & Nieschlag 1990"),
    _p("testosterone_enanthate.t_fraction", "F_TE", 0.72, "1", 0, 1,
       "testosterone content of the ester (mg T per mg ester) x bioavailability",
       "molar mass ratio 288.4/400.6"),
    _p("testosterone_cypionate.release_half_life", "t_TC", 8.0, "day", 0.1, 100,
       "release half-life of T from the cypionate depot", "Nankin 1987 Fertil Steril"),
    _p("testosterone_cypionate.t_fraction", "F_TC", 0.70, "1", 0, 1,
       "testosterone content of the ester x bioavailability", "molar mass ratio 288.4/412.6"),
    _p("testosterone_gel.absorption_half_life", "t_gel", 8.0, "h", 0.5, 100,
       "half-life of absorption from skin", "AndroGel label (steady delivery over 24 h)"),
    _p("testosterone_gel.bioavailability", "F_gel", 0.10, "1", 0, 1,
       "fraction of applied T absorbed", "AndroGel label (about 10 %)"),
    _p("hcg.absorption_half_life", "t_hcg_abs", 2.8, "h", 0.1, 100,
       "absorption half-life of im/sc hCG", "hCG SmPC (Tmax 9-12 h with t1/2 about 30 h)"),
    _p("hcg.half_life", "t_hcg", 30.0, "h", 1, 200,
       "elimination half-life of hCG", "hCG SmPC; Metabolism of HCG in man (27-34 h)"),
    _p("hcg.volume", "V_hcg", 6.1, "L", 0.5, 100,
       "distribution volume of hCG", "hCG SmPC (MCR 3.4 L/day with t1/2 30 h)"),
    _p("fsh_drug.absorption_half_life", "t_fshx_abs", 3.0, "h", 0.1, 100,
       "absorption half-life of im/sc FSH preparations", "Clin Endocrinol (peak about 10 h)"),
    _p("fsh_drug.half_life", "t_fshx", 30.0, "h", 1, 200,
       "elimination half-life of FSH preparations", "Clin Endocrinol (25-36 h)"),
    _p("fsh_drug.volume", "V_fshx", 10.0, "L", 0.5, 100,
       "distribution volume of FSH preparations", "follitropin alfa SmPC (about 10 L)"),
    _p("fsh_drug.bioavailability", "F_fshx", 0.70, "1", 0, 1,
       "sc bioavailability of FSH preparations", "follitropin alfa SmPC (about 70 %)"),
    _p("clomiphene.absorption_half_life", "t_clo_abs", 1.5, "h", 0.1, 48,
       "oral absorption half-life", "label (Tmax about 6 h)"),
    _p("clomiphene.half_life", "t_clo", 5.0, "day", 0.1, 60,
       "elimination half-life (zuclomiphene accumulates)", "label; Helo 2017 BJUI"),
    _p("clomiphene.volume", "V_clo", 12000.0, "L", 10, 1e6,
       "apparent volume (gives about 15 ng/mL at 25 mg/day)", "Helo 2017 BJUI (recalled)"),
    _p("clomiphene.ic50", "IC_clo", 2.5, "ng/mL", 0.01, 1e4,
       "concentration blocking half of ERalpha feedback",
       "calibrated: S12 (LH x1.8, T x2.2 at 6 weeks) and S13 (FSH +3.6 IU/L)"),
    _p("tamoxifen.absorption_half_life", "t_tam_abs", 1.5, "h", 0.1, 48,
       "oral absorption half-life", "SmPC (Tmax 4-7 h)"),
    _p("tamoxifen.half_life", "t_tam", 7.0, "day", 0.1, 60,
       "elimination half-life", "SmPC"),
    _p("tamoxifen.volume", "V_tam", 476.0, "L", 10, 1e6,
       "apparent volume (20 mg gives a 42 ng/mL peak)", "SmPC"),
    _p("tamoxifen.ic50", "IC_tam", 200.0, "ng/mL", 0.01, 1e4,
       "concentration blocking half of ERalpha feedback", "calibrated: S13"),
    _p("serm.max_block", "blk_max", 0.9, "1", 0, 1,
       "largest fraction of ERalpha feedback a SERM can block", "calibrated: S12"),
    _p("anastrozole.absorption_half_life", "t_ana_abs", 1.0, "h", 0.1, 48,
       "oral absorption half-life", "SmPC (Tmax about 2 h)"),
    _p("anastrozole.half_life", "t_ana", 50.0, "h", 1, 500,
       "elimination half-life", "SmPC (about 50 h, steady state by day 7)"),
    _p("anastrozole.volume", "V_ana", 70.0, "L", 1, 1e4,
       "apparent volume", "assumed (Cmax about 14 ng/mL after 1 mg)"),
    _p("anastrozole.ic50", "IC_ana", 25.0, "ng/mL", 0.01, 1e4,
       "concentration giving half-maximal aromatase inhibition", "calibrated: E2 -50 % at 1 mg/day (Leder 2004)"),
    _p("anastrozole.max_inhibition", "ai_max", 0.95, "1", 0, 1,
       "largest fraction of aromatization inhibited", "assumed"),
    # --- Laboratory measurement ----------------------------------------------------------
    _p("labs.lh_cv", "cv_lh", 0.06, "1", 0, 1, "analytical CV of the LH immunoassay",
       "typical IRMA/ICMA precision (Veldhuis 1987 used CV < 8 %)"),
    _p("labs.fsh_cv", "cv_fsh", 0.06, "1", 0, 1, "analytical CV of the FSH immunoassay",
       "typical ICMA precision"),
    _p("labs.t_cv", "cv_t", 0.07, "1", 0, 1, "analytical CV of total T (LC-MS/MS)",
       "Travison 2017 (CDC-harmonized LC-MS/MS)"),
    _p("labs.e2_cv", "cv_e2", 0.10, "1", 0, 1, "analytical CV of estradiol (LC-MS/MS)",
       "Verdonk 2019"),
    _p("labs.inhibin_cv", "cv_inh", 0.10, "1", 0, 1, "analytical CV of inhibin B ELISA",
       "Anawalt 1996 JCEM"),
    _p("labs.semen_within_cv", "cv_semen", 0.35, "1", 0, 3,
       "within-man CV of sperm concentration between ejaculates",
       "Keel 2006 Fertil Steril 85:128 (28-45 %)"),
    _p("labs.semen_examined_volume", "v_semen", 0.2, "mL", 1e-4, 10,
       "semen volume effectively searched for sperm; no sperm seen = azoospermia",
       "calibrated: S8 (WHO 1990: 65 % azoospermic at 6 months)"),
    _p("labs.motility_sd", "sd_mot", 5.0, "%", 0, 50,
       "between-ejaculate SD of motility (percentage points)",
       "Keel 2006 Fertil Steril 85:128"),
    # --- Numerical --------------------------------------------------------------------------
    _p("numerics.slow_acceleration", "accel", 1.0, "1", 1, 100,
       "speed-up of slow states used only while equilibrating a new cohort",
       "numerical (1 during simulation)"),
    # --- Added after 0.1.0 -----------------------------------------------------------------
    # New entries go at the end: a patient's between-patient draws are indexed by registry
    # position, so appending keeps every existing cohort (and its validated values) as it was.
    _p("sertoli.androgen_fsh_substitution", "s_TF", 0.8, "1", 0, 1,
       "largest share of the FSH deficit at the Sertoli cell that supraphysiological "
       "tubular androgen makes up",
       "Finkel 1985 NEJM 313:651 (hCG alone restores spermatogenesis in adult-onset "
       "gonadotropin deficiency); Burris 1988 JCEM 66:1144 (in partial congenital "
       "deficiency, in the larger testes); size calibrated: S10"),
    _p("sertoli.androgen_fsh_substitution_k", "K_TF", 1800.0, "nmol/L", 1, 20000,
       "tubular androgen (ITT) at which half of the largest substitution is reached",
       "above normal ITT about 1200 nmol/L (Coviello 2005); calibrated: S10"),
    _p("spermatogonia.reserve_loss_time", "tau_Rl", 730.0, "day", 10, 1e5,
       "time constant of the loss of the spermatogonial reserve without Sertoli support",
       "calibrated: S9 and S10 (longer TRT slows recovery: Liu 2006; Kohn 2017)", cv=0.5),
    _p("spermatogonia.reserve_gain_time", "tau_Rg", 20.0, "day", 1, 1e4,
       "time constant of the rebuilding of the spermatogonial reserve with Sertoli support",
       "calibrated: S9"),
    _p("spermatogonia.reserve_sertoli_k", "K_R", 0.35, "1", 1e-3, 10,
       "Sertoli function at which the reserve is as often lost as rebuilt",
       "below normal Sertoli function (about 0.8 here); calibrated: S9"),
    _p("spermatogonia.reserve_age_slope", "r_age", 0.05, "1/year", 0, 1,
       "fractional speeding of the reserve's loss per year of age after 35",
       "Kohn 2017 (age predicts slower recovery after hCG); size calibrated: S10"),
    _p("steroid.adrenal_t", "T_adr", 0.52, "nmol/L", 0, 10,
       "serum testosterone that adrenal production sustains alone (15 ng/dL: castrate level)",
       "Oefelein 2000 Urology 56:1021 (mean 15 ng/dL after bilateral orchiectomy)"),
    _p("numerics.reserve_acceleration", "accel_R", 1.0, "1", 1, 10000,
       "speed-up of the spermatogonial reserve used only while equilibrating a new cohort "
       "(its loss takes years: the other slow states' speed-up leaves it short of steady "
       "state where Sertoli support is low)",
       "numerical (1 during simulation)"),
)

BY_NAME: dict[str, Param] = {p.name: p for p in REGISTRY}
BY_SYMBOL: dict[str, Param] = {p.sym: p for p in REGISTRY}
assert len(BY_NAME) == len(REGISTRY) and len(BY_SYMBOL) == len(REGISTRY)


def lookup(name: str) -> Param:
    """Return the registry entry for a dotted name, or raise a helpful ValueError."""
    try:
        return BY_NAME[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, BY_NAME, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown parameter {name!r}{hint} (see `pulsehpg params` for all "
            f"{len(BY_NAME)} names)"
        ) from None


# Registry entries the cohort sets itself: a value given for them would be overwritten.
_SET_BY_COHORT = {
    "numerics.slow_acceleration": "it is used only while a new cohort equilibrates, where the "
                                  "cohort sets it from Numerics(burn_in_accel=...)",
    "numerics.reserve_acceleration": "it is used only while a new cohort equilibrates, where "
                                     "the cohort sets it from "
                                     "Numerics(burn_in_reserve_accel=...)",
}


def settable(name: str) -> Param:
    """The registry entry for a parameter a user may set, vary or sweep; a ValueError
    saying why for an unknown name, a structural parameter (compiled into the core: a
    value given at run time would be ignored) or one the cohort sets itself."""
    par = lookup(name)
    if par.structural:
        raise ValueError(f"{par.name} is compiled into the core (structural): a value given "
                         f"at run time would be ignored; change it in pulsehpg/params.py and "
                         f"rebuild")
    if par.name in _SET_BY_COHORT:
        raise ValueError(f"{par.name} cannot be set: {_SET_BY_COHORT[par.name]}")
    return par
