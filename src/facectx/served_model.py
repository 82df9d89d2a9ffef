"""The model `facectx register` logs, as MLflow's "models from code": serving.log_pyfunc_model logs
this file, and MLflow runs it to load the model (facectx travels beside it as code_paths), so no
pickled object is stored, and none is unpickled where the model is served."""

from facectx.serving import FaceContextModel
from facectx.tracking import set_served_model

set_served_model(FaceContextModel())
