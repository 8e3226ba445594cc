"""Bibliography used by the methods boilerplate (structured, rendered as text and BibTeX)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REFERENCES", "Reference"]


@dataclass(frozen=True)
class Reference:
    """One journal article (or software record)."""

    key: str
    authors: str  # Vancouver style, "Surname AB, Surname CD, et al."
    title: str
    journal: str
    year: int
    volume: str = ""
    pages: str = ""
    doi: str = ""

    def text(self) -> str:
        """Vancouver-style reference with a DOI link (Markdown)."""
        loc = f"{self.year}"
        if self.volume:
            loc += f";{self.volume}"
        if self.pages:
            loc += f":{self.pages}"
        authors = self.authors if self.authors.endswith(".") else self.authors + "."
        out = f"{authors} {self.title}. *{self.journal}*. {loc}."
        if self.doi:
            out += f" [doi:{self.doi}](https://doi.org/{self.doi})"
        return out

    def bibtex(self) -> str:
        """A BibTeX ``@article`` entry."""
        fields = {
            "author": self.authors.replace(", ", " and ").replace(" and et al.", " and others"),
            "title": "{" + self.title + "}",
            "journal": self.journal,
            "year": str(self.year),
            "volume": self.volume,
            "pages": self.pages.replace("-", "--"),
            "doi": self.doi,
        }
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items() if v)
        return f"@article{{{self.key},\n{body}\n}}"


def _r(*args: str | int, **kw: str) -> Reference:
    return Reference(*args, **kw)  # type: ignore[arg-type]


REFERENCES: dict[str, Reference] = {
    r.key: r
    for r in (
        _r(
            "qsm_consensus_2024",
            "QSM Consensus Organization Committee, Bilgic B, Costagli M, et al.",
            "Recommended implementation of quantitative susceptibility mapping for clinical "
            "research in the brain: a consensus of the ISMRM electro-magnetic tissue properties "
            "study group",
            "Magn Reson Med",
            2024,
            "91(5)",
            "1834-1862",
            doi="10.1002/mrm.30006",
        ),
        _r(
            "eckstein2018",
            "Eckstein K, Dymerska B, Bachrata B, et al.",
            "Computationally efficient combination of multi-channel phase data from multi-echo "
            "acquisitions (ASPIRE)",
            "Magn Reson Med",
            2018,
            "79(6)",
            "2996-3006",
            doi="10.1002/mrm.26963",
        ),
        _r(
            "dymerska2021",
            "Dymerska B, Eckstein K, Bachrata B, et al.",
            "Phase unwrapping with a rapid opensource minimum spanning tree algorithm (ROMEO)",
            "Magn Reson Med",
            2021,
            "85(4)",
            "2294-2308",
            doi="10.1002/mrm.28563",
        ),
        _r(
            "herraez2002",
            "Herráez MA, Burton DR, Lalor MJ, Gdeisat MA",
            "Fast two-dimensional phase-unwrapping algorithm based on sorting by reliability "
            "following a noncontinuous path",
            "Appl Opt",
            2002,
            "41(35)",
            "7437-7444",
            doi="10.1364/AO.41.007437",
        ),
        _r(
            "abdulrahman2007",
            "Abdul-Rahman HS, Gdeisat MA, Burton DR, Lalor MJ, Lilley F, Moore CJ",
            "Fast and robust three-dimensional best path phase unwrapping algorithm",
            "Appl Opt",
            2007,
            "46(26)",
            "6623-6635",
            doi="10.1364/AO.46.006623",
        ),
        _r(
            "vanderwalt2014",
            "van der Walt S, Schönberger JL, Nunez-Iglesias J, et al.",
            "scikit-image: image processing in Python",
            "PeerJ",
            2014,
            "2",
            "e453",
            doi="10.7717/peerj.453",
        ),
        _r(
            "schofield2003",
            "Schofield MA, Zhu Y",
            "Fast phase unwrapping algorithm for interferometric applications",
            "Opt Lett",
            2003,
            "28(14)",
            "1194-1196",
            doi="10.1364/OL.28.001194",
        ),
        _r(
            "wu2012",
            "Wu B, Li W, Guidon A, Liu C",
            "Whole brain susceptibility mapping using compressed sensing",
            "Magn Reson Med",
            2012,
            "67(1)",
            "137-147",
            doi="10.1002/mrm.23000",
        ),
        _r(
            "schweser2011",
            "Schweser F, Deistung A, Lehr BW, Reichenbach JR",
            "Quantitative imaging of intrinsic magnetic tissue properties using MRI signal "
            "phase: an approach to in vivo brain iron metabolism?",
            "NeuroImage",
            2011,
            "54(4)",
            "2789-2807",
            doi="10.1016/j.neuroimage.2010.10.070",
        ),
        _r(
            "sun2014",
            "Sun H, Wilman AH",
            "Background field removal using spherical mean value filtering and Tikhonov "
            "regularization",
            "Magn Reson Med",
            2014,
            "71(3)",
            "1151-1157",
            doi="10.1002/mrm.24765",
        ),
        _r(
            "liu2011",
            "Liu T, Khalidov I, de Rochefort L, et al.",
            "A novel background field removal method for MRI using projection onto dipole "
            "fields (PDF)",
            "NMR Biomed",
            2011,
            "24(9)",
            "1129-1136",
            doi="10.1002/nbm.1670",
        ),
        _r(
            "zhou2014",
            "Zhou D, Liu T, Spincemaille P, Wang Y",
            "Background field removal by solving the Laplacian boundary value problem",
            "NMR Biomed",
            2014,
            "27(3)",
            "312-319",
            doi="10.1002/nbm.3064",
        ),
        _r(
            "kames2018",
            "Kames C, Wiggermann V, Rauscher A",
            "Rapid two-step dipole inversion for susceptibility mapping with sparsity priors",
            "NeuroImage",
            2018,
            "167",
            "276-283",
            doi="10.1016/j.neuroimage.2017.11.018",
        ),
        _r(
            "milovic2018",
            "Milovic C, Bilgic B, Zhao B, Acosta-Cabronero J, Tejos C",
            "Fast nonlinear susceptibility inversion with variational regularization",
            "Magn Reson Med",
            2018,
            "80(2)",
            "814-821",
            doi="10.1002/mrm.27073",
        ),
        _r(
            "tikhonov1963",
            "Tikhonov AN",
            "Solution of incorrectly formulated problems and the regularization method",
            "Soviet Math Dokl",
            1963,
            "4",
            "1035-1038",
        ),
        _r(
            "bilgic2014",
            "Bilgic B, Fan AP, Polimeni JR, et al.",
            "Fast quantitative susceptibility mapping with L1-regularization and automatic "
            "parameter selection",
            "Magn Reson Med",
            2014,
            "72(5)",
            "1444-1459",
            doi="10.1002/mrm.25029",
        ),
        _r(
            "shmueli2009",
            "Shmueli K, de Zwart JA, van Gelderen P, Li TQ, Dodd SJ, Duyn JH",
            "Magnetic susceptibility mapping of brain tissue in vivo using MRI phase data",
            "Magn Reson Med",
            2009,
            "62(6)",
            "1510-1522",
            doi="10.1002/mrm.22135",
        ),
        _r(
            "liu2012medi",
            "Liu J, Liu T, de Rochefort L, et al.",
            "Morphology enabled dipole inversion for quantitative susceptibility mapping using "
            "structural consistency between the magnitude image and the susceptibility map",
            "NeuroImage",
            2012,
            "59(3)",
            "2560-2568",
            doi="10.1016/j.neuroimage.2011.08.082",
        ),
        _r(
            "pei2015",
            "Pei M, Nguyen TD, Thimmappa ND, et al.",
            "Algorithm for fast monoexponential fitting based on Auto-Regression on Linear "
            "Operations (ARLO) of data",
            "Magn Reson Med",
            2015,
            "73(2)",
            "843-850",
            doi="10.1002/mrm.25137",
        ),
        _r(
            "eckstein2021",
            "Eckstein K, Bachrata B, Hangel G, et al.",
            "Improved susceptibility weighted imaging at ultra-high field using bipolar "
            "multi-echo acquisition and optimized image processing: CLEAR-SWI",
            "NeuroImage",
            2021,
            "237",
            "118175",
            doi="10.1016/j.neuroimage.2021.118175",
        ),
        _r(
            "haacke2004",
            "Haacke EM, Xu Y, Cheng YC, Reichenbach JR",
            "Susceptibility weighted imaging (SWI)",
            "Magn Reson Med",
            2004,
            "52(3)",
            "612-618",
            doi="10.1002/mrm.20198",
        ),
        _r(
            "hagemeier2012",
            "Hagemeier J, Weinstock-Guttman B, Bergsland N, et al.",
            "Iron deposition on SWI-filtered phase in the subcortical deep gray matter of "
            "patients with clinically isolated syndrome may precede structure-specific atrophy",
            "AJNR Am J Neuroradiol",
            2012,
            "33(8)",
            "1596-1601",
            doi="10.3174/ajnr.A3030",
        ),
        _r(
            "habib2012",
            "Habib CA, Liu M, Bawany N, et al.",
            "Assessing abnormal iron content in the deep gray matter of patients with multiple "
            "sclerosis versus healthy controls",
            "AJNR Am J Neuroradiol",
            2012,
            "33(2)",
            "252-258",
            doi="10.3174/ajnr.A2773",
        ),
        _r(
            "rolls2020",
            "Rolls ET, Huang CC, Lin CP, Feng J, Joliot M",
            "Automated anatomical labelling atlas 3",
            "NeuroImage",
            2020,
            "206",
            "116189",
            doi="10.1016/j.neuroimage.2019.116189",
        ),
        _r(
            "evans2012",
            "Evans AC, Janke AL, Collins DL, Baillet S",
            "Brain templates and atlases",
            "NeuroImage",
            2012,
            "62(2)",
            "911-922",
            doi="10.1016/j.neuroimage.2012.01.024",
        ),
        _r(
            "fonov2011",
            "Fonov V, Evans AC, Botteron K, et al.",
            "Unbiased average age-appropriate atlases for pediatric studies",
            "NeuroImage",
            2011,
            "54(1)",
            "313-327",
            doi="10.1016/j.neuroimage.2010.07.033",
        ),
        _r(
            "avants2008",
            "Avants BB, Epstein CL, Grossman M, Gee JC",
            "Symmetric diffeomorphic image registration with cross-correlation: evaluating "
            "automated labeling of elderly and neurodegenerative brain",
            "Med Image Anal",
            2008,
            "12(1)",
            "26-41",
            doi="10.1016/j.media.2007.06.004",
        ),
        _r(
            "tustison2021",
            "Tustison NJ, Cook PA, Holbrook AJ, et al.",
            "The ANTsX ecosystem for quantitative biological and medical imaging",
            "Sci Rep",
            2021,
            "11",
            "9068",
            doi="10.1038/s41598-021-87564-6",
        ),
        _r(
            "gorgolewski2011",
            "Gorgolewski K, Burns CD, Madison C, et al.",
            "Nipype: a flexible, lightweight and extensible neuroimaging data processing "
            "framework in Python",
            "Front Neuroinform",
            2011,
            "5",
            "13",
            doi="10.3389/fninf.2011.00013",
        ),
        _r(
            "yarkoni2019",
            "Yarkoni T, Markiewicz CJ, de la Vega A, et al.",
            "PyBIDS: Python tools for BIDS datasets",
            "J Open Source Softw",
            2019,
            "4(40)",
            "1294",
            doi="10.21105/joss.01294",
        ),
        _r(
            "gorgolewski2016",
            "Gorgolewski KJ, Auer T, Calhoun VD, et al.",
            "The brain imaging data structure, a format for organizing and describing outputs "
            "of neuroimaging experiments",
            "Sci Data",
            2016,
            "3",
            "160044",
            doi="10.1038/sdata.2016.44",
        ),
        _r(
            "harris2020",
            "Harris CR, Millman KJ, van der Walt SJ, et al.",
            "Array programming with NumPy",
            "Nature",
            2020,
            "585",
            "357-362",
            doi="10.1038/s41586-020-2649-2",
        ),
        _r(
            "virtanen2020",
            "Virtanen P, Gommers R, Oliphant TE, et al.",
            "SciPy 1.0: fundamental algorithms for scientific computing in Python",
            "Nat Methods",
            2020,
            "17",
            "261-272",
            doi="10.1038/s41592-019-0686-2",
        ),
        _r(
            "brett_nibabel",
            "Brett M, Markiewicz CJ, Hanke M, et al.",
            "nipy/nibabel",
            "Zenodo",
            2024,
            doi="10.5281/zenodo.591597",
        ),
    )
}
