"""The model, written once: states, rate laws, events, drugs and observables.

This is the one place a modeller reads and changes the physiology. The compiled
core's right-hand side (``csrc/model_gen.h``), the SciPy reference
(:mod:`pulsehpg.reference`) and the SBML export are all generated from it by
:mod:`pulsehpg.codegen`.

Conventions
-----------
* Time is in hours; parameters are used in core units (see :mod:`pulsehpg.params`).
* Every state obeys ``dy/dt = rate - clearance * y``. ``clearance`` may depend on
  parameters only; the core integrates it exactly (exponential integrator), so
  fast linear kinetics (GnRH, LH, T) do not force small steps.
* ``slow`` states change over days to months; while a new cohort is equilibrated
  their dynamics are sped up by ``accel`` (a pure time rescaling that leaves the
  steady state unchanged). ``accel`` is 1 during every simulation.
* ``coarse`` states (listed last) vary over hours to months and act on the
  pulse-scale dynamics only through slowly varying values: the core steps them on
  coarse steps (4 h by default) driven by their fast inputs' exact time averages and
  trends over each step, and lets the pulse-scale states see them extrapolated
  linearly. Fast inputs must enter coarse rates linearly (as factors or terms, not
  inside a division or a function). States that feed back into the pulse-scale
  dynamics through a fast input (the Leydig LH receptor and capacity, drug depots)
  are not coarse.
* Expressions are Python syntax over parameter symbols, state names, earlier
  ``Var`` names, infusion inputs ``inf_<drug>`` and the functions ``exp``, ``log``,
  ``sqrt`` and ``pos`` (max(x, 0)). Powers with a literal integer exponent are
  compiled to multiplications.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "State", "Var", "Output", "Drug", "PulseGenerator", "STATES", "VARS",
    "OUTPUTS", "DRUGS", "PULSE", "N_STAGES", "N_EPI",
]

N_STAGES = 20  # spermatogenic stages: a chain, not a single lag (Erlang transit)
N_EPI = 3  # epididymal compartments
DEATH_STAGES = range(3, 10)  # spermatocytes (meiosis): hormone-dependent apoptosis
# An upper bound (1/h) on the loss rates that sit inside coarse states' rates rather than in
# their clearances, with the speed-ups of equilibration: germ-cell death, d_max * (1 -
# survival) <= d_max, times accel, and the spermatogonial reserve's rates, times accel_R.
# The multirate core keeps its coarse step within the explicit part's stability for them
# (sped up, a high d_max would otherwise make the chain diverge).
COARSE_LOSS_BOUND = ("d_max * accel + pos((1.0 / tau_Rg + (1.0 + r_age * pos(age - 35.0))"
                     " / tau_Rl) * accel_R - d_max * accel)")
EARLY_STAGES = range(0, 5)  # spermatogonia/early spermatocytes: seen by inhibin B


@dataclass(frozen=True)
class State:
    name: str
    unit: str
    init: float  # starting guess before equilibration
    rate: str
    clearance: str = "0"
    slow: bool = False
    meaning: str = ""
    coarse: bool = False
    speedup: str = "accel"  # the parameter that speeds a slow state up while equilibrating


@dataclass(frozen=True)
class Var:
    name: str
    expr: str
    meaning: str = ""


@dataclass(frozen=True)
class Output:
    name: str
    expr: str
    unit: str
    meaning: str


@dataclass(frozen=True)
class Drug:
    name: str
    unit: str  # unit of a dose; infusion rates are unit/h
    targets: tuple[tuple[str, str], ...]  # (state, bioavailability expression)
    meaning: str
    marks_pulse: bool = False  # a bolus counts as a GnRH pulse for frequency decoding
    fast: bool = False  # a bolus starts fast kinetics: restart the fine step ladder


@dataclass(frozen=True)
class PulseGenerator:
    interval_mean: str  # hours, evaluated at the pulse
    mass_mean: str  # added to portal GnRH
    interval_shape: str  # gamma shape of the interval
    mass_cv: str  # log-normal CV of the mass
    interval_regular: str  # deterministic mode: a regular train, free of state
    effects: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # state += expr * mass
    counts: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # state += expr


# ---------------------------------------------------------------------------
# Algebraic quantities, in evaluation order.
# ---------------------------------------------------------------------------
_early = " + ".join(f"x{i}" for i in EARLY_STAGES)
VARS: tuple[Var, ...] = (
    # drug concentrations
    Var("C_gon", "1000.0 * GonP / V_gon", "plasma gonadorelin, pg/mL"),
    Var("C_clo", "1000.0 * Clo / V_clo", "clomiphene, ng/mL"),
    Var("C_tam", "1000.0 * Tam / V_tam", "tamoxifen, ng/mL"),
    Var("C_ana", "1000.0 * Ana / V_ana", "anastrozole, ng/mL"),
    Var("q_serm", "C_clo / IC_clo + C_tam / IC_tam"),
    Var("er_block", "blk_max * q_serm / (1.0 + q_serm)", "fraction of ERalpha feedback blocked"),
    Var("ai_inh", "ai_max * C_ana / (C_ana + IC_ana)", "fraction of aromatase inhibited"),
    # feedback signals (1 at the reference steroid levels)
    Var("fbT", "Ts / T_ref"),
    Var("fbE", "E2 * (1.0 - er_block) / E2_ref", "E2 seen through ERalpha"),
    Var("fbH", "fb_sens * ((1.0 - w_E) * fbT + w_E * fbE)", "hypothalamic steroid feedback"),
    # gonadotroph
    Var("G_tot", "G + C_gon", "GnRH at the gonadotroph, pg/mL"),
    Var("theta", "G_tot / (G_tot + Kd_G)", "GnRH receptor occupancy"),
    Var("sensP", "1.0 / (1.0 + fb_sens * (aE_P * fbE + aT_P * fbT))",
        "gonadotroph responsiveness under steroid feedback"),
    Var("S", "theta * Ra * sensP", "GnRH receptor signal"),
    Var("relL", "k_relL * S * PL", "LH release, IU/L/h"),
    Var("synL", "sig_L * sensP * (b_L + (1.0 - b_L) * s / (s + K_sL))"),
    Var("synF", "sig_F * sensP / (1.0 + aI_F * InhB / Inh_ref)"
        " * (b_F + (1.0 - b_F) * s**2 / (s**2 + K_sF**2)) / (1.0 + z / z_F)"),
    Var("relF", "(k_cF + k_relF * S) * PF", "FSH release, IU/L/h"),
    Var("F_tot", "F + FSHx", "serum FSH, endogenous and drug, IU/L"),
    # Leydig cells
    Var("L_eq", "LHa + LHb + pot_hcg * hCG", "LH-receptor agonist, LH-equivalent IU/L"),
    Var("phi", "L_eq / (L_eq + Kd_L)", "LH receptor occupancy"),
    Var("sigLH", "Lr * phi", "Leydig LH receptor signal"),
    Var("agef", "1.0 - t_age * pos(age - 40.0)", "age loss of Leydig capacity"),
    Var("T_prod", "testis_on * T_sec * agef * Cap * St", "ITT production, nmol/L/h"),
    Var("T_exo", "3467.0 / V_T * (LN2 / t_TE * TEd + LN2 / t_TC * TCd"
        " + LN2 / t_gel * Gel)", "absorbed exogenous T, nmol/L/h (mg to nmol: 3467)"),
    Var("k_itt", "LN2 / t_itt"),
    Var("T_testis", "vr * k_itt * ITT / (LN2 / t_T)", "serum-T equivalent of testicular output"),
    # Sertoli cells and spermatogenesis
    Var("hF_ser", "F_tot / (F_tot + K_serF)"),
    Var("hT_ser", "Atub / (Atub + K_serT)"),
    # Supraphysiological tubular androgen (high-dose hCG) substitutes in part for FSH at the
    # Sertoli cell: hCG alone restores spermatogenesis in men with adult-onset
    # gonadotropin deficiency (Finkel 1985) or partial congenital deficiency (Burris 1988),
    # and T alone in FSH-less mice (Singh & Handelsman 1995). A steep Hill (8) above
    # normal ITT keeps baseline, TRT and spontaneous recovery almost unchanged.
    Var("sub_TF", "s_TF * Atub**8 / (Atub**8 + K_TF**8)",
        "share of the FSH deficit at the Sertoli cell made up by androgen"),
    Var("hF_eff", "1.0 - (1.0 - hF_ser) * (1.0 - sub_TF)"),
    Var("ser_tgt", "(b_serF + (1.0 - b_serF) * hF_eff) * (b_ser + (1.0 - b_ser) * hT_ser)"),
    # the spermatogonial reserve (Rsv) bounds the pool Sertoli support allows: it is lost
    # slowly while Sertoli support is low (months to years of gonadotropin suppression)
    # and rebuilt over weeks once it returns, so longer suppression slows recovery
    # (Liu 2006; Kohn 2017)
    Var("sig_R", "Ser**4 / (Ser**4 + K_R**4)", "Sertoli support of the reserve"),
    Var("ssc_tgt", "Rsv * (b_ssc + (1.0 - b_ssc) * Ser**2 / (Ser**2 + K_ssc**2))"),
    Var("k_st", f"{N_STAGES}.0 / dur_spg", "stage transit rate, 1/h"),
    Var("k_epi", f"{N_EPI}.0 / dur_epi", "epididymal transit rate, 1/h"),
    Var("h_entry", "Atub**2 / (Atub**2 + K_eT**2)", "androgen support of germ-cell entry"),
    Var("entry", "k_st * tf * testis_on * Nssc * Ser * h_entry", "germ-cell entry, stages/h"),
    Var("death", "d_max * (1.0 - Atub**8 / (Atub**8 + K_dT**8))",
        "apoptosis of hormone-dependent germ cells, 1/h"),
    Var("early_gc", f"({_early}) / {len(EARLY_STAGES)}.0"),
    Var("mot_tgt", "Atub / (Atub + K_mT) * ((1.0 - f_mF) + f_mF * F_tot / (F_tot + K_mF))"),
)

# ---------------------------------------------------------------------------
# States
# ---------------------------------------------------------------------------
_fast = [
    State("G", "pg/mL", 0.0, "0.0", "LN2 / t_gnrh", meaning="portal GnRH (endogenous)"),
    State("Ra", "1", 1.0, "k_rec * (1.0 - theta)**4 * (1.0 - Ra) - k_des * theta * Ra + k_rec * Ra",
          "k_rec", meaning="responsive (non-desensitized) GnRH receptor fraction; "
          "recovery needs unbound receptor"),
    State("s", "1", 0.1, "S / tau_s", "1.0 / tau_s",
          meaning="integrated GnRH receptor signal (drives synthesis)"),
    State("z", "1/h", 0.6, "0.0", "1.0 / tau_z", meaning="sensed GnRH pulse frequency"),
    State("PL", "IU/L", 1.0, "synL - relL", "k_degL", meaning="pituitary LH pool"),
    State("LHa", "IU/L", 2.0, "f_LHa * relL", "LN2 / t_LHa", meaning="serum LH, fast component"),
    State("LHb", "IU/L", 2.0, "(1.0 - f_LHa) * relL", "LN2 / t_LHb",
          meaning="serum LH, slow component"),
    State("PF", "IU/L", 10.0, "synF - relF", "k_degF", meaning="pituitary FSH pool"),
    State("F", "IU/L", 4.0, "relF", "LN2 / t_FSH", meaning="serum FSH (endogenous)"),
    State("Lr", "1", 1.0, "1.0 / t_recL - k_downL * phi**6 * Lr", "1.0 / t_recL",
          meaning="functional Leydig LH receptor fraction"),
    State("St", "1", 0.5, "sigLH**2 / (sigLH**2 + K_st**2) / tau_st", "1.0 / tau_st",
          meaning="steroidogenic activity (lags the LH receptor signal)"),
    State("ITT", "nmol/L", 1200.0, "T_prod + k_itt * rho * Ts", "k_itt",
          meaning="intratesticular testosterone"),
    # the adrenal share (T_adr alone, after orchiectomy) keeps feedback from falling to zero
    State("Ts", "nmol/L", 18.0, "vr * k_itt * ITT + T_exo + T_adr * LN2 / t_T",
          "LN2 / t_T + vr * k_itt * rho", meaning="serum total testosterone"),
    State("E2", "pg/mL", 22.0,
          "k_ar * (1.0 - ai_inh) * (1.0 + met_ar * met)"
          " * (Ts + f_E2t / (1.0 - f_E2t) * T_testis)", "LN2 / t_E2",
          meaning="serum estradiol"),
]
_slow = [
    # Leydig capacity feeds T production and is driven by the pulsatile LH signal
    # through a saturating function: it stays in the fast loop
    State("Cap", "1", 0.5, "(b_cap + (1.0 - b_cap) * sigLH / (sigLH + K_cap)) / tau_cap",
          "1.0 / tau_cap", True, "Leydig trophic capacity"),
    # tubular androgen drives the coarse states through steep functions, from zero
    # after a suppression: in the fast loop, so that their averages are exact
    State("Atub", "nmol/L", 1100.0, "ITT / tau_A", "1.0 / tau_A", True,
          "androgen action in the seminiferous tubules (ITT averaged by AR signalling)"),
]
_drugs = [
    State("GonSC", "ug", 0.0, "F_gon * inf_gonadorelin", "LN2 / t_gon_abs",
          meaning="gonadorelin in the subcutaneous depot"),
    State("GonP", "ug", 0.0, "LN2 / t_gon_abs * GonSC + inf_gonadorelin_iv", "LN2 / t_gon",
          meaning="gonadorelin in plasma"),
    State("hCGd", "IU", 0.0, "inf_hcg + inf_hmg", "LN2 / t_hcg_abs", True,
          "hCG (and hMG LH activity) at the injection site"),
    State("hCG", "IU/L", 0.0, "LN2 / t_hcg_abs * hCGd / V_hcg", "LN2 / t_hcg", True, "serum hCG"),
    State("FSHxd", "IU", 0.0, "F_fshx * (inf_fsh + inf_hmg)", "LN2 / t_fshx_abs", True,
          "FSH preparation at the injection site"),
    State("FSHx", "IU/L", 0.0, "LN2 / t_fshx_abs * FSHxd / V_fshx", "LN2 / t_fshx", True,
          "serum FSH from drug"),
    State("TEd", "mg", 0.0, "F_TE * inf_testosterone_enanthate", "LN2 / t_TE", True,
          "T (as free T mass) in the enanthate depot"),
    State("TCd", "mg", 0.0, "F_TC * inf_testosterone_cypionate", "LN2 / t_TC", True,
          "T in the cypionate depot"),
    State("Gel", "mg", 0.0, "F_gel * inf_testosterone_gel", "LN2 / t_gel", True,
          "absorbable T on and in the skin"),
    State("CloG", "mg", 0.0, "inf_clomiphene", "LN2 / t_clo_abs", True, "clomiphene in gut"),
    State("Clo", "mg", 0.0, "LN2 / t_clo_abs * CloG", "LN2 / t_clo", True, "clomiphene in body"),
    State("TamG", "mg", 0.0, "inf_tamoxifen", "LN2 / t_tam_abs", True, "tamoxifen in gut"),
    State("Tam", "mg", 0.0, "LN2 / t_tam_abs * TamG", "LN2 / t_tam", True, "tamoxifen in body"),
    State("AnaG", "mg", 0.0, "inf_anastrozole", "LN2 / t_ana_abs", True, "anastrozole in gut"),
    State("Ana", "mg", 0.0, "LN2 / t_ana_abs * AnaG", "LN2 / t_ana", True,
          "anastrozole in body"),
]
_coarse = [
    # a Sertoli-cell product (Anawalt 1996): none without testes
    State("InhB", "pg/mL", 170.0, "k_inh * testis_on * Ser * ((1.0 - f_inhg) + f_inhg"
          " * early_gc / (early_gc + 0.3))", "LN2 / t_inh", meaning="serum inhibin B",
          coarse=True),
    State("Ser", "1", 0.6, "ser_tgt / tau_ser", "1.0 / tau_ser", True, "Sertoli function",
          coarse=True),
    # logistic growth N (1 - N / tgt) / tau, written as rate - N / tau so that its time
    # scale is a clearance: the core then integrates it exactly and bounds coarse steps by it
    State("Nssc", "1", 0.7,
          "Nssc * (2.0 - Nssc / ssc_tgt) / (tau_ssc * (1.0 + ssc_age * pos(age - 35.0)))",
          "1.0 / (tau_ssc * (1.0 + ssc_age * pos(age - 35.0)))", True,
          "spermatogonial (stem-cell) pool: logistic self-renewal towards the "
          "capacity Sertoli support allows", coarse=True),
    State("Mq", "1", 0.8, "mot_tgt / dur_epi", "1.0 / dur_epi", True,
          "epididymal maturation quality (motility)", coarse=True),
    State("Rsv", "1", 1.0, "sig_R * (1.0 - Rsv) / tau_Rg"
          " - (1.0 - sig_R) * Rsv * (1.0 + r_age * pos(age - 35.0)) / tau_Rl", "0", True,
          "spermatogonial reserve (1: intact)", coarse=True, speedup="accel_R"),
]
_chain = []
for _i in range(N_STAGES):
    _inflow = "entry" if _i == 0 else f"k_st * x{_i - 1}"
    _loss = f" - death * x{_i}" if _i in DEATH_STAGES else ""
    _chain.append(State(f"x{_i}", "1", 0.5, _inflow + _loss, "k_st", True,
                        f"germ cells in spermatogenic stage {_i + 1} of {N_STAGES}",
                        coarse=True))
for _j in range(N_EPI):
    _inflow = f"k_st * x{N_STAGES - 1}" if _j == 0 else f"k_epi * ep{_j - 1}"
    _chain.append(State(f"ep{_j}", "1", 0.5, _inflow, "k_epi", True,
                        f"sperm in epididymal compartment {_j + 1} of {N_EPI}",
                        coarse=True))

# order: pulse-scale states, drug states (zero until a drug is given), coarse states
STATES: tuple[State, ...] = tuple(_fast + _slow + _drugs + _coarse + _chain)

# ---------------------------------------------------------------------------
# Drugs: where a dose goes and with what bioavailability
# ---------------------------------------------------------------------------
DRUGS: tuple[Drug, ...] = (
    Drug("testosterone_enanthate", "mg", (("TEd", "F_TE"),), "IM testosterone enanthate (ester mass)"),
    Drug("testosterone_cypionate", "mg", (("TCd", "F_TC"),), "IM testosterone cypionate (ester mass)"),
    Drug("testosterone_gel", "mg", (("Gel", "F_gel"),), "transdermal testosterone (applied mass)"),
    Drug("gonadorelin", "ug", (("GonSC", "F_gon"),), "subcutaneous gonadorelin (pump or injection)",
         marks_pulse=True, fast=True),
    Drug("gonadorelin_iv", "ug", (("GonP", "1.0"),), "intravenous gonadorelin",
         marks_pulse=True, fast=True),
    Drug("hcg", "IU", (("hCGd", "1.0"),), "human chorionic gonadotropin, im/sc"),
    Drug("fsh", "IU", (("FSHxd", "F_fshx"),), "recombinant FSH, sc"),
    Drug("hmg", "IU", (("FSHxd", "F_fshx"), ("hCGd", "1.0")),
         "human menopausal gonadotropin (IU of FSH, equal IU of LH activity)"),
    Drug("clomiphene", "mg", (("CloG", "1.0"),), "clomiphene citrate, oral"),
    Drug("tamoxifen", "mg", (("TamG", "1.0"),), "tamoxifen, oral"),
    Drug("anastrozole", "mg", (("AnaG", "1.0"),), "anastrozole, oral"),
)

PULSE = PulseGenerator(
    interval_mean="I_min * (1.0 + I_gain * fbH) * (1.0 + met_int * met)",
    mass_mean="gnrh_on * M_max * (1.0 - met_mass * met) / (1.0 + M_gain * fbH**M_hill)",
    interval_shape="I_shape",
    mass_cv="M_cv",
    # the interval with feedback at its reference level (fbH = 1): a regular train, so
    # that a deterministic run has no pulse times that depend on integration error
    interval_regular="I_min * (1.0 + I_gain) * (1.0 + met_int * met)",
    effects=(("G", "1.0"),),
    counts=(("z", "1.0 / tau_z"),),
)

_vermeulen = (
    "2.0 * Ts * 1e-9 / (bV + sqrt(bV * bV + 4.0 * aV * Ts * 1e-9)) * 2.8842e11"
)
OUTPUTS: tuple[Output, ...] = (
    Output("lh", "LHa + LHb", "IU/L", "serum LH"),
    Output("fsh", "F + FSHx", "IU/L", "serum FSH (endogenous and drug)"),
    Output("t_total", "Ts * 28.84", "ng/dL", "serum total testosterone"),
    Output("t_free", _vermeulen, "pg/mL", "free testosterone (Vermeulen 1999)"),
    Output("e2", "E2", "pg/mL", "serum estradiol"),
    Output("itt", "ITT", "nmol/L", "intratesticular testosterone"),
    Output("inhibin_b", "InhB", "pg/mL", "serum inhibin B"),
    Output("sperm_conc", f"c_sp * k_epi * ep{N_EPI - 1} / k_st", "M/mL",
           "sperm concentration (true, before semen-analysis noise)"),
    Output("motility", "mot_max * Mq", "%", "total sperm motility"),
    Output("gnrhr_active", "Ra", "1", "responsive GnRH receptor fraction"),
    Output("lhr_functional", "Lr", "1", "functional Leydig LH receptor fraction"),
    Output("leydig_capacity", "Cap", "1", "Leydig trophic capacity"),
    Output("sertoli_function", "Ser", "1", "Sertoli function"),
    Output("spermatogonial_activity", "Nssc", "1", "spermatogonial activity"),
    Output("hcg", "hCG", "IU/L", "serum hCG"),
    Output("gonadorelin", "C_gon", "pg/mL", "plasma gonadorelin"),
    Output("clomiphene", "C_clo", "ng/mL", "serum clomiphene"),
    Output("tamoxifen", "C_tam", "ng/mL", "serum tamoxifen"),
    Output("anastrozole", "C_ana", "ng/mL", "serum anastrozole"),
)
# Helpers for the free-T output (evaluated only when outputs are requested).
OUTPUT_VARS: tuple[Var, ...] = (
    Var("shbg_m", "SHBG * (1.0 + shbg_age * pos(age - 40.0)) * 1e-9", "SHBG, mol/L"),
    Var("nV", "1.0 + Ka_alb * Alb / 69000.0"),
    Var("aV", "nV * Ka_shbg"),
    Var("bV", "nV + Ka_shbg * (shbg_m - Ts * 1e-9)"),
)
