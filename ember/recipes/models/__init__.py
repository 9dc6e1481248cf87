"""The reference models of the recipes: a character GPT and three image classifiers."""

from ember.recipes.models.base import RecipeModule
from ember.recipes.models.gpt import GPT, GPTModule
from ember.recipes.models.vision import CNNMNIST, MLP, ClassifierModule, ResNetCIFAR

__all__ = ["RecipeModule", "GPT", "GPTModule", "ClassifierModule", "CNNMNIST", "ResNetCIFAR", "MLP"]
