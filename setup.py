"""score_sde_pds: fast sampling of score-based diffusion models (PDS, JAX/Flax)."""
from setuptools import find_packages, setup

setup(
    name='score_sde_pds',
    version='0.1.0',
    description='Preconditioned diffusion sampling for official score_sde NCSN++/DDPM++ '
                'models in JAX/Flax',
    packages=find_packages(include=['score_sde_pds', 'score_sde_pds.*', 'configs', 'configs.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax==0.10.2',
        'jaxlib==0.10.2',
        'flax==0.12.8',
        'optax==0.2.8',
        'diffrax>=0.7.2,<0.8',
        'ml_collections==1.1.0',
        'absl-py>=2.1,<3',
        'numpy>=2.0,<3',
        'scipy>=1.13',
        'msgpack>=1.0',
        'pillow>=10',
        'imageio>=2.34',
        'tqdm>=4.66',
        'matplotlib>=3.8',
        'tensorflow-datasets==4.9.10',
        'mlxtend==0.25.0',
        'scikit-learn>=1.5',
    ],
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist>=3.5'],
        'cuda12': ['jax[cuda12]==0.10.2'],
        'tpu': ['jax[tpu]==0.10.2'],
        'torch': ['torch>=2.6'],
    },
)
